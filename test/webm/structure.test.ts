/**
 * The splitter on hand-built streams: each test states the structure it feeds
 * (see test/helpers/ebml-builder.ts) and what must be reported.
 */
import { expect } from 'chai';
import type { SplitterLimits } from '../../src/webm/splitter.js';
import {
  blockGroup,
  blocksOf,
  cluster,
  ebmlHeader,
  el,
  errorOf,
  IDS,
  idBytes,
  info,
  simpleBlock,
  split,
  streamHeader,
  tracks,
  uintEl,
  unknownEl,
  vint,
  VP8_OPUS_TRACKS,
  type SplitEvent,
} from '../helpers/ebml-builder.js';

/** Splits whole, byte by byte and in 5-byte chunks; the three must agree. Returns the events. */
function splitAll(input: Buffer, limits: Partial<SplitterLimits> = {}): SplitEvent[] {
  const whole = split(input, input.length || 1, limits);
  expect(whole.thrown).to.equal(undefined);
  for (const size of [1, 5]) {
    const other = split(input, size, limits);
    expect(other.thrown).to.equal(undefined);
    expect(other.events, `events with ${size}-byte chunks`).to.deep.equal(whole.events);
  }
  return whole.events;
}

const types = (events: SplitEvent[]) => events.map((e) => e.type);
const blockSummary = (events: SplitEvent[]) => blocksOf(events).map((b) => [b.track, b.timecode, b.keyframe]);

/** A "tags" element with a little content, and an ID no spec defines. */
const TAGS = el(IDS.Tags, el(0x7373, el(0x67c8, [el(0x45a3, Buffer.from('TITLE')), el(0x4487, Buffer.from('x'))])));
const CUES = el(IDS.Cues, el(0xbb, [uintEl(0xb3, 0), el(0xb7, [uintEl(0xf7, 1), uintEl(0xf1, 0)])]));
const UNKNOWN_ID = 0x5fff;
const VOID = el(IDS.Void, Buffer.alloc(10));
const CRC = el(IDS.CRC32, Buffer.from([1, 2, 3, 4]));

describe('WebmSplitter structure', () => {
  describe('unknown sizes', () => {
    for (let length = 1; length <= 8; length++) {
      it(`reads an unknown-size Segment and Clusters whose size field is ${length} byte(s) of all ones`, () => {
        const input = Buffer.concat([
          streamHeader({ segmentSizeLength: length }),
          cluster(0, [simpleBlock({ track: 1, relative: 0, keyframe: true }), simpleBlock({ track: 2, relative: 5 })], length),
          cluster(100, [simpleBlock({ track: 1, relative: 33 })], length),
        ]);
        const events = splitAll(input);
        expect(types(events)).to.deep.equal(['header', 'cluster', 'block', 'block', 'cluster', 'block', 'end']);
        expect(events.filter((e) => e.type === 'cluster')).to.deep.equal([
          { type: 'cluster', offset: streamHeader({ segmentSizeLength: length }).length, timecode: 0, size: undefined },
          { type: 'cluster', offset: input.length - cluster(100, [simpleBlock({ track: 1, relative: 33 })], length).length, timecode: 100, size: undefined },
        ]);
        expect(blockSummary(events)).to.deep.equal([[1, 0, true], [2, 5, false], [1, 133, false]]);
      });
    }

    it('ends an unknown-size Cluster at the next Cluster, at Cues, at Tags and at other level-1 elements', () => {
      const input = Buffer.concat([
        streamHeader(),
        cluster(0, [simpleBlock({ track: 1, relative: 0, keyframe: true })]),
        CUES,
        cluster(1000, [simpleBlock({ track: 1, relative: 0 })]),
        TAGS,
        cluster(2000, [simpleBlock({ track: 1, relative: 0 })]),
        el(IDS.SeekHead, el(0x4dbb, uintEl(0x53ac, 0))),
        // A SimpleBlock here is not inside any Cluster: it must not be reported.
        simpleBlock({ track: 1, relative: 1 }),
        cluster(3000, [simpleBlock({ track: 2, relative: -3 })]),
      ]);
      const events = splitAll(input);
      expect(types(events)).to.deep.equal(['header', 'cluster', 'block', 'cluster', 'block', 'cluster', 'block', 'cluster', 'block', 'end']);
      expect(blockSummary(events)).to.deep.equal([[1, 0, true], [1, 1000, false], [1, 2000, false], [2, 2997, false]]);
    });

    it('ends an unknown-size Cluster and Segment at a new EBML header, reported as a new stream header', () => {
      const first = Buffer.concat([streamHeader(), cluster(5000, [simpleBlock({ track: 1, relative: 0, keyframe: true })])]);
      const vp9 = [{ number: 1, type: 'video' as const, codecId: 'V_VP9', width: 640, height: 360 }];
      const secondHeader = Buffer.concat([ebmlHeader(), unknownEl(IDS.Segment, 8), info(500_000), tracks(vp9)]);
      const input = Buffer.concat([first, secondHeader, cluster(7, [simpleBlock({ track: 1, relative: 1, keyframe: true })])]);
      const events = splitAll(input);
      expect(types(events)).to.deep.equal(['header', 'cluster', 'block', 'header', 'cluster', 'block', 'end']);
      const headers = events.filter((e) => e.type === 'header');
      const second = headers[1];
      if (second.type !== 'header') throw new Error('unreachable');
      expect(second.offset).to.equal(first.length);
      expect(second.bytes.equals(secondHeader)).to.equal(true);
      expect(second.header.info.timecodeScale).to.equal(500_000);
      expect(second.header.info.mimeType).to.equal('video/webm; codecs="vp9"');
      expect(second.header.info.tracks[0]).to.include({ codecId: 'V_VP9', width: 640, height: 360, kind: 'video' });
      expect(blockSummary(events)).to.deep.equal([[1, 5000, true], [1, 8, true]]);
    });
  });

  describe('known sizes', () => {
    it('reads known-size Clusters in a known-size Segment, reporting their sizes', () => {
      const c1 = cluster(0, [simpleBlock({ track: 1, relative: 0, keyframe: true }), simpleBlock({ track: 2, relative: 10 })], 'known');
      const c2 = cluster(40, [simpleBlock({ track: 1, relative: 0 })], 'known');
      const body = Buffer.concat([info(), tracks(VP8_OPUS_TRACKS), c1, c2, CUES]);
      const head = Buffer.concat([ebmlHeader(), el(IDS.Segment, []).subarray(0, 4), vint(body.length, 8)]);
      const input = Buffer.concat([head, body]);
      const events = splitAll(input);
      expect(types(events)).to.deep.equal(['header', 'cluster', 'block', 'block', 'cluster', 'block', 'end']);
      const clusters = events.filter((e) => e.type === 'cluster');
      expect(clusters.map((e) => e.type === 'cluster' && e.size)).to.deep.equal([c1.length - 5, c2.length - 5]);
      expect(blockSummary(events)).to.deep.equal([[1, 0, true], [2, 10, false], [1, 40, false]]);
    });

    it('mixes known-size and unknown-size Clusters; a block after a known-size Cluster ends is not in it', () => {
      const input = Buffer.concat([
        streamHeader(),
        cluster(0, [simpleBlock({ track: 1, relative: 0, keyframe: true })], 'known'),
        VOID,
        cluster(100, [simpleBlock({ track: 1, relative: 2 })], 8),
        cluster(200, [simpleBlock({ track: 1, relative: 3 })], 'known'),
        simpleBlock({ track: 1, relative: 99 }),
        cluster(300, [simpleBlock({ track: 1, relative: 4 })], 4),
      ]);
      expect(blockSummary(splitAll(input))).to.deep.equal([[1, 0, true], [1, 102, false], [1, 203, false], [1, 304, false]]);
    });

    it('fails with CLUSTER_OVERRUN when a child runs past its known-size Cluster', () => {
      const block = simpleBlock({ track: 1, relative: 0, keyframe: true });
      const timecode = uintEl(IDS.Timecode, 0);
      const short = Buffer.concat([idBytes(IDS.Cluster), vint(timecode.length + block.length - 1), timecode, block]);
      const input = Buffer.concat([streamHeader(), short, cluster(1, [])]);
      const error = errorOf(splitAll(input));
      expect(error).to.include({ code: 'CLUSTER_OVERRUN', offset: streamHeader().length + 4 + 1 + timecode.length });
    });
  });

  describe('blocks', () => {
    it('reads track numbers written in 1, 2, 3 and 8 bytes, including over-long encodings', () => {
      const trackSpecs = [
        { number: 1, type: 'video' as const, codecId: 'V_VP8', width: 2, height: 2 },
        { number: 200, type: 'audio' as const, codecId: 'A_OPUS' },
        { number: 70_000, type: 'audio' as const, codecId: 'A_VORBIS' },
      ];
      const withTrackVint = (trackVint: Buffer, relative: number) => {
        const head = Buffer.alloc(3);
        head.writeInt16BE(relative);
        head[2] = 0x80;
        return el(IDS.SimpleBlock, [trackVint, head, Buffer.from('data')]);
      };
      const input = Buffer.concat([
        streamHeader({ tracks: trackSpecs }),
        cluster(10, [
          withTrackVint(vint(1), 0),
          withTrackVint(vint(200), 1),
          withTrackVint(vint(70_000), 2),
          withTrackVint(vint(1, 2), 3),
          withTrackVint(vint(200, 8), 4),
        ]),
      ]);
      const events = splitAll(input);
      const blocks = blocksOf(events);
      expect(blocks.map((b) => [b.track, b.timecode])).to.deep.equal([[1, 10], [200, 11], [70_000, 12], [1, 13], [200, 14]]);
      // timecodeOffset points at the relative timecode, wherever the track number ends.
      expect(blocks.map((b) => b.bytes.readInt16BE(b.timecodeOffset))).to.deep.equal([0, 1, 2, 3, 4]);
      const headerEvent = events[0];
      expect(headerEvent.type === 'header' && headerEvent.header.info.tracks.map((t) => t.number)).to.deep.equal([1, 200, 70_000]);
    });

    it('reports signed relative timecodes, and the timecode scale with each cluster', () => {
      const input = Buffer.concat([
        ebmlHeader(),
        unknownEl(IDS.Segment, 8),
        info(100_000),
        tracks(VP8_OPUS_TRACKS),
        cluster(70_000, [simpleBlock({ track: 1, relative: -32768 }), simpleBlock({ track: 1, relative: 32767 }), simpleBlock({ track: 2, relative: -1 })]),
      ]);
      const events = splitAll(input);
      expect(blockSummary(events).map(([, t]) => t)).to.deep.equal([70_000 - 32768, 70_000 + 32767, 69_999]);
      const headerEvent = events[0];
      expect(headerEvent.type === 'header' && headerEvent.header.info.timecodeScale).to.equal(100_000);
    });

    it('reports the lacing of each block', () => {
      const frames = [Buffer.alloc(300, 1), Buffer.alloc(310, 2), Buffer.alloc(290, 3)];
      const input = Buffer.concat([
        streamHeader(),
        cluster(0, [
          simpleBlock({ track: 2, relative: 0, frames, lacing: 'xiph', keyframe: true }),
          simpleBlock({ track: 2, relative: 1, frames: [Buffer.alloc(100), Buffer.alloc(100)], lacing: 'fixed' }),
          simpleBlock({ track: 2, relative: 2, frames, lacing: 'ebml' }),
          simpleBlock({ track: 2, relative: 3 }),
          blockGroup({ track: 2, relative: 4, frames, lacing: 'xiph' }),
        ]),
      ]);
      expect(blocksOf(splitAll(input)).map((b) => [b.kind, b.lacing, b.keyframe])).to.deep.equal([
        ['simple', 'xiph', true],
        ['simple', 'fixed', false],
        ['simple', 'ebml', false],
        ['simple', 'none', false],
        ['group', 'xiph', true],
      ]);
    });

    it('reports a BlockGroup as a keyframe exactly when it has no ReferenceBlock, with its BlockDuration', () => {
      const input = Buffer.concat([
        streamHeader(),
        cluster(0, [
          blockGroup({ track: 1, relative: 0, duration: 33 }),
          blockGroup({ track: 1, relative: 33, references: [-33] }),
          blockGroup({ track: 1, relative: 66, references: [-33, 33], duration: 10 }),
          // Other children (Void, BlockAdditions) before the Block; ReferenceBlock before it too.
          blockGroup({ track: 1, relative: 99, extra: [VOID, el(0x75a1, el(0xa6, [uintEl(0xee, 1), el(0xa5, Buffer.from('x'))]))] }),
          blockGroup({ track: 1, relative: 120, extra: [el(IDS.ReferenceBlock, Buffer.from([0xff, 0xe0]))] }),
          // Sizes written in 8 bytes (legal, and what some muxers do) inside the group.
          el(IDS.BlockGroup, [el(IDS.Block, [vint(1), Buffer.from([0, 125, 0]), Buffer.alloc(20)], 8), el(IDS.ReferenceBlock, Buffer.from([0xfb]), 8)]),
          // The SimpleBlock keyframe bit is what counts for SimpleBlocks.
          simpleBlock({ track: 1, relative: 130, keyframe: true }),
        ]),
      ]);
      const blocks = blocksOf(splitAll(input));
      expect(blocks.map((b) => [b.kind, b.timecode, b.keyframe, b.duration])).to.deep.equal([
        ['group', 0, true, 33],
        ['group', 33, false, undefined],
        ['group', 66, false, 10],
        ['group', 99, true, undefined],
        ['group', 120, false, undefined],
        ['group', 125, false, undefined],
        ['simple', 130, true, undefined],
      ]);
      // The Block's timecode is found inside the group, after whatever precedes the Block.
      expect(blocks.map((b) => b.bytes.readInt16BE(b.timecodeOffset))).to.deep.equal([0, 33, 66, 99, 120, 125, 130]);
    });

    it('hands out each block as the exact bytes at its offset', () => {
      const input = Buffer.concat([
        streamHeader(),
        cluster(0, [simpleBlock({ track: 1, relative: 0, frames: [Buffer.alloc(5000, 7)] }), blockGroup({ track: 2, relative: 1, references: [-1] })]),
      ]);
      for (const b of blocksOf(splitAll(input))) expect(b.bytes.equals(input.subarray(b.offset, b.offset + b.size))).to.equal(true);
    });
  });

  describe('elements to skip', () => {
    it('skips Void, CRC-32, Cues, Tags and unknown IDs in the header, between Clusters and inside them', () => {
      const unknownTop = el(UNKNOWN_ID, Buffer.from('mystery'));
      const input = Buffer.concat([
        ebmlHeader(),
        unknownEl(IDS.Segment, 8),
        CRC,
        VOID,
        TAGS,
        info(),
        unknownTop,
        tracks(VP8_OPUS_TRACKS),
        VOID,
        cluster(0, [CRC, simpleBlock({ track: 1, relative: 0, keyframe: true }), VOID, el(UNKNOWN_ID, Buffer.alloc(3)), simpleBlock({ track: 2, relative: 1 })]),
        VOID,
        unknownTop,
        cluster(10, [el(0xa7, Buffer.from([0])), simpleBlock({ track: 1, relative: 0 }), el(0xab, Buffer.from([1])), CRC], 'known'),
        CUES,
        TAGS,
        cluster(20, [simpleBlock({ track: 1, relative: 0 }), CUES]),
        cluster(30, [simpleBlock({ track: 1, relative: 0 })]),
        TAGS,
      ]);
      const events = splitAll(input);
      expect(types(events)).to.deep.equal(['header', 'cluster', 'block', 'block', 'cluster', 'block', 'cluster', 'block', 'cluster', 'block', 'end']);
      expect(blockSummary(events)).to.deep.equal([[1, 0, true], [2, 1, false], [1, 10, false], [1, 20, false], [1, 30, false]]);
      const header = events[0];
      if (header.type !== 'header') throw new Error('no header');
      // Everything before the first Cluster, in order, whatever it is.
      expect(header.header.sections.map((s) => s.id)).to.deep.equal([IDS.CRC32, IDS.Void, IDS.Tags, IDS.Info, UNKNOWN_ID, IDS.Tracks, IDS.Void]);
      expect(header.bytes.length).to.equal(input.indexOf(idBytes(IDS.Cluster)));
    });
  });

  describe('limits and malformed input', () => {
    const header = streamHeader();
    const tooBig = (id: number, size: number) => Buffer.concat([idBytes(id), vint(size, 8)]);

    it('accepts a block up to maxElementSize and rejects a larger one as soon as its size is read', () => {
      const limits = { maxElementSize: 1000 };
      const fits = simpleBlock({ track: 1, relative: 0, frames: [Buffer.alloc(1000 - 4)] });
      const ok = Buffer.concat([header, cluster(0, [fits])]);
      expect(blocksOf(splitAll(ok, limits))).to.have.length(1);
      const over = simpleBlock({ track: 1, relative: 0, frames: [Buffer.alloc(1000 - 3)] });
      const start = Buffer.concat([header, cluster(0, [])]);
      // Only the block's ID and size are fed: the error must not wait for the body.
      const events = split(Buffer.concat([start, over.subarray(0, 3)]), 1, limits).events;
      expect(errorOf(events)).to.include({ code: 'ELEMENT_TOO_LARGE', offset: start.length });
    });

    for (const [name, id, code, limits] of [
      ['SimpleBlock', IDS.SimpleBlock, 'ELEMENT_TOO_LARGE', {}],
      ['BlockGroup', IDS.BlockGroup, 'ELEMENT_TOO_LARGE', {}],
      ['Void inside a Cluster', IDS.Void, 'ELEMENT_TOO_LARGE', {}],
      ['Timecode', IDS.Timecode, 'ELEMENT_TOO_LARGE', {}],
    ] as const) {
      it(`fails with ${code} on a ${name} claiming 2^50 bytes, without allocating`, () => {
        const start = Buffer.concat([header, unknownEl(IDS.Cluster, 8), uintEl(IDS.Timecode, 0)]);
        const input = Buffer.concat([start, tooBig(id, 2 ** 50), Buffer.alloc(64)]);
        const before = process.memoryUsage().arrayBuffers;
        const events = splitAll(input, limits);
        expect(process.memoryUsage().arrayBuffers - before).to.be.below(16 << 20);
        expect(errorOf(events)).to.include({ code, offset: start.length });
        expect(types(events).at(-1)).to.equal('error');
      });
    }

    it('fails with HEADER_TOO_LARGE on header elements past maxHeaderSize, and on 2^50-byte ones', () => {
      const big = el(IDS.Void, Buffer.alloc(2000));
      const input = Buffer.concat([ebmlHeader(), unknownEl(IDS.Segment, 8), info(), big, tracks(VP8_OPUS_TRACKS), cluster(0, [])]);
      expect(errorOf(splitAll(input, { maxHeaderSize: 2000 }))).to.include({ code: 'HEADER_TOO_LARGE' });
      expect(types(splitAll(input, { maxHeaderSize: 4000 }))).to.deep.equal(['header', 'cluster', 'end']);
      const huge = Buffer.concat([ebmlHeader(), unknownEl(IDS.Segment, 8), tooBig(IDS.Tracks, 2 ** 50)]);
      const offset = ebmlHeader().length + 12;
      expect(errorOf(splitAll(huge))).to.include({ code: 'HEADER_TOO_LARGE', offset });
    });

    it('counts repeated Segment headers against maxHeaderSize', () => {
      // Each is 12 bytes; without the limit, a stream of them would be held forever.
      const input = Buffer.concat([ebmlHeader(), ...Array<Buffer>(200).fill(unknownEl(IDS.Segment, 8))]);
      expect(errorOf(splitAll(input, { maxHeaderSize: 1000 }))).to.include({ code: 'HEADER_TOO_LARGE' });
    });

    it('reports each kind of malformed stream with its code and the offset of the offending element', () => {
      const afterHeader = header.length;
      const inCluster = afterHeader + 12 + uintEl(IDS.Timecode, 0).length;
      const cases: [string, Buffer, string, number][] = [
        ['not EBML', Buffer.concat([info(), header]), 'NOT_WEBM', 0],
        ['DocType mp4', Buffer.concat([ebmlHeader('mp4'), unknownEl(IDS.Segment, 8), info(), tracks(VP8_OPUS_TRACKS), cluster(0, [])]), 'NOT_WEBM', afterHeader - 1],
        ['9-byte Timecode', Buffer.concat([header, unknownEl(IDS.Cluster, 8), el(IDS.Timecode, Buffer.alloc(9))]), 'INVALID_SIZE', afterHeader + 12],
        ['no Tracks', Buffer.concat([ebmlHeader(), unknownEl(IDS.Segment, 8), info(), cluster(0, [])]), 'NO_TRACKS', ebmlHeader().length + 12 + info().length],
        ['zero byte as ID', Buffer.concat([header, Buffer.from([0, 0x81, 0])]), 'INVALID_ID', afterHeader],
        ['5-byte ID', Buffer.concat([header, Buffer.from([0x08, 1, 2, 3, 4, 0x80])]), 'INVALID_ID', afterHeader],
        ['zero byte as size', Buffer.concat([header, Buffer.from([0xec, 0, 0])]), 'INVALID_SIZE', afterHeader],
        ['unknown-size Tracks', Buffer.concat([ebmlHeader(), unknownEl(IDS.Segment, 8), unknownEl(IDS.Tracks, 8)]), 'UNKNOWN_SIZE', ebmlHeader().length + 12],
        ['unknown-size BlockGroup', Buffer.concat([header, unknownEl(IDS.Cluster, 8), uintEl(IDS.Timecode, 0), unknownEl(IDS.BlockGroup, 8)]), 'UNKNOWN_SIZE', inCluster],
        ['block before Timecode', Buffer.concat([header, unknownEl(IDS.Cluster, 8), simpleBlock({ track: 1, relative: 0 })]), 'BAD_BLOCK', afterHeader + 12],
        ['block too short', Buffer.concat([header, unknownEl(IDS.Cluster, 8), uintEl(IDS.Timecode, 0), el(IDS.SimpleBlock, Buffer.from([0x81, 0]))]), 'BAD_BLOCK', inCluster],
        ['BlockGroup without Block', Buffer.concat([header, unknownEl(IDS.Cluster, 8), uintEl(IDS.Timecode, 0), el(IDS.BlockGroup, uintEl(IDS.BlockDuration, 1))]), 'BAD_BLOCK', inCluster],
        ['truncated block', Buffer.concat([header, cluster(0, [simpleBlock({ track: 1, relative: 0 })])]).subarray(0, -2), 'TRUNCATED', inCluster],
        ['truncated element header', Buffer.concat([header, unknownEl(IDS.Cluster, 8).subarray(0, 6)]), 'TRUNCATED', afterHeader],
      ];
      for (const [name, input, code, offset] of cases) {
        const events = splitAll(input);
        const error = errorOf(events);
        expect(error, name).to.include({ code, offset });
        expect(error?.message, name).to.contain(`at byte ${offset}`);
        expect(types(events).filter((t) => t === 'error' || t === 'end'), name).to.deep.equal(['error']);
      }
    });
  });
});
