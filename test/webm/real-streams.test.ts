/**
 * The splitter against streams made at test time by GStreamer and ffmpeg, checked
 * against what ffprobe and mkvinfo read from the same bytes.
 */
import { createHash } from 'node:crypto';
import { expect } from 'chai';
import type { WebmHeader } from '../../src/webm/splitter.js';
import { blocksOf, IDS, prng, split, walkElements, type SplitEvent } from '../helpers/ebml-builder.js';
import {
  ffmpegWebm,
  ffprobePackets,
  ffprobeStreams,
  gstWebm,
  mkvinfoFrames,
  type Media,
  type ProbeStream,
} from '../helpers/media.js';

interface Case {
  name: string;
  make: () => Media;
  /** What the header must say, besides what ffprobe says. */
  width: number;
  height: number;
  sampleRate?: number;
  /** ffmpeg's live muxer cuts clusters by size and time: some must start with a non-keyframe video block. */
  clustersNotAtKeyframes?: boolean;
  /** The av1C record must be present (ffmpeg writes it; GStreamer 1.22's webmmux does not). */
  av1Record?: boolean;
}

const CASES: Case[] = [
  {
    name: 'GStreamer VP8 + Opus',
    make: () => gstWebm({ videoCodec: 'vp8', audioCodec: 'opus', seconds: 3, width: 320, height: 240 }),
    width: 320,
    height: 240,
    sampleRate: 48000,
  },
  {
    name: 'GStreamer VP9 + Vorbis',
    make: () => gstWebm({ videoCodec: 'vp9', audioCodec: 'vorbis', seconds: 1.5, width: 256, height: 144 }),
    width: 256,
    height: 144,
    sampleRate: 44100,
  },
  {
    // av1enc is slow: a tiny picture and a few frames.
    name: 'GStreamer AV1 + Opus',
    make: () => gstWebm({ videoCodec: 'av1', audioCodec: 'opus', seconds: 0.5, width: 160, height: 120, bitrate: 200 }),
    width: 160,
    height: 120,
    sampleRate: 48000,
  },
  {
    name: 'ffmpeg -live 1 VP9 + Opus, clusters cut by size and time',
    make: () =>
      ffmpegWebm({ videoCodec: 'vp9', audioCodec: 'opus', seconds: 3, width: 320, height: 240, live: true, clusterSizeLimit: 12_000, clusterTimeLimitMs: 250 }),
    width: 320,
    height: 240,
    sampleRate: 48000,
    clustersNotAtKeyframes: true,
  },
  {
    // Not live: known-size Segment, SeekHead, Cues and Tags after the clusters, and an av1C CodecPrivate.
    // 4:4:4 makes it AV1 profile 1, so the codec string is not just the default.
    name: 'ffmpeg AV1 4:4:4 (file, with Cues)',
    make: () => ffmpegWebm({ videoCodec: 'av1', audioCodec: 'none', seconds: 0.5, width: 160, height: 120, live: false, pixFmt: 'yuv444p', bitrate: 200 }),
    width: 160,
    height: 120,
    av1Record: true,
  },
];

/** The MSE codec string ffprobe's view of a stream implies. */
function expectedMseCodec(s: ProbeStream, hasRecord: boolean): string {
  if (s.codecName !== 'av1') return s.codecName;
  // Without an av1C record the header cannot know profile and level; the splitter then
  // names a conservative default (main profile, level 4.0, 8-bit).
  if (!hasRecord) return 'av01.0.08M.08';
  const profile = { Main: 0, High: 1, Professional: 2 }[s.profile ?? ''];
  const bitDepth = /12/.test(s.pixFmt ?? '') ? 12 : /10/.test(s.pixFmt ?? '') ? 10 : 8;
  // ffprobe does not show the tier; these encodes use the main tier.
  return `av01.${profile}.${String(s.level).padStart(2, '0')}M.${String(bitDepth).padStart(2, '0')}`;
}

/** CodecDelay (ns) of each track number, read from the header bytes. */
function codecDelaysNs(headerBytes: Buffer): Map<number, number> {
  const delays = new Map<number, number>();
  let track = 0;
  const uint = (e: { dataStart: number; dataEnd: number }) => headerBytes.subarray(e.dataStart, e.dataEnd).reduce((v, x) => v * 256 + x, 0);
  for (const e of walkElements(headerBytes)) {
    if (e.id === IDS.TrackNumber) track = uint(e);
    else if (e.id === CODEC_DELAY) delays.set(track, uint(e));
  }
  return delays;
}
const CODEC_DELAY = 0x56aa;

const sha1 = (b: Buffer) => createHash('sha1').update(b).digest('hex');

/** Events in a form chai can compare quickly: buffers replaced by digests. */
function comparable(events: SplitEvent[]): unknown[] {
  return events.map((e) => {
    if (e.type === 'block') return { ...e, bytes: sha1(e.bytes) };
    if (e.type === 'header') {
      const h: WebmHeader = e.header;
      return {
        type: e.type,
        offset: e.offset,
        bytes: sha1(e.bytes),
        ebml: sha1(h.ebml),
        sections: h.sections.map((s) => [s.id, sha1(s.bytes)]),
        info: { ...h.info, tracks: h.info.tracks.map((t) => ({ ...t, codecPrivate: t.codecPrivate && sha1(t.codecPrivate) })) },
      };
    }
    return e;
  });
}

function headerOf(events: SplitEvent[]): WebmHeader {
  const e = events.find((x) => x.type === 'header');
  if (!e || e.type !== 'header') throw new Error(`no header event in ${JSON.stringify(events.slice(0, 3))}`);
  return e.header;
}

describe('WebmSplitter on real GStreamer and ffmpeg streams', function () {
  this.timeout(180_000);

  for (const c of CASES) {
    describe(c.name, () => {
      let media: Media;
      let events: SplitEvent[];

      before(function () {
        media = c.make();
        const result = split(media.bytes, 64 << 10);
        expect(result.thrown).to.equal(undefined);
        events = result.events;
      });

      it('ends cleanly, with one header and a cluster event before the first block', () => {
        expect(events.filter((e) => e.type === 'error')).to.deep.equal([]);
        expect(events.filter((e) => e.type === 'header')).to.have.length(1);
        expect(events[0].type).to.equal('header');
        expect(events[1].type).to.equal('cluster');
        expect(events[events.length - 1]).to.deep.equal({ type: 'end' });
      });

      it('reports every block with the track, timestamp and keyframe flag ffprobe and mkvinfo read', () => {
        const header = headerOf(events);
        const scale = header.info.timecodeScale;
        const blocks = blocksOf(events);
        const packets = ffprobePackets(media.path);
        const frames = mkvinfoFrames(media.path);
        expect(blocks.length, 'blocks vs ffprobe packets').to.equal(packets.length);
        expect(blocks.length, 'blocks vs mkvinfo frames').to.equal(frames.length);
        expect(blocks.length).to.be.greaterThan(10);
        const trackNumbers = header.info.tracks.map((t) => t.number);
        const codecDelays = codecDelaysNs(header.bytes);
        blocks.forEach((b, i) => {
          const p = packets[i];
          const f = frames[i];
          const at = `block ${i} at byte ${b.offset}`;
          // ffprobe numbers streams from 0 in track order.
          expect(trackNumbers.indexOf(b.track), at).to.equal(p.stream);
          // ffprobe shifts Opus timestamps back by the track's CodecDelay (the encoder's pre-skip).
          const delayMs = (codecDelays.get(b.track) ?? 0) / 1e6;
          expect((b.timecode * scale) / 1e6 - delayMs, at).to.be.closeTo(p.ptsMs, 0.5);
          // ffprobe marks every Opus/Vorbis packet as a keyframe whatever the block says,
          // so its flag is compared on video only; mkvinfo reports the block's own flag on all tracks.
          const kind = header.info.tracks[p.stream].kind;
          if (kind === 'video') expect(b.keyframe, `${at} (ffprobe)`).to.equal(p.keyframe);
          expect(b.track, at).to.equal(f.track);
          expect(b.timecode * scale, at).to.equal(f.timestampNs);
          expect(b.keyframe ? 'I' : 'P', `${at} (mkvinfo)`).to.equal(f.type);
          // ffprobe's packet position is the block body (1-byte track number, timecode, flags, frame).
          // A SimpleBlock's frame ends the element; in a BlockGroup (ffmpeg writes one for the last
          // Opus packet, to carry DiscardPadding) other children may follow the Block.
          expect(p.size, at).to.equal(f.size);
          if (b.kind === 'simple') {
            expect(p.pos + 4 + p.size, at).to.equal(b.offset + b.size);
            expect(b.size - b.timecodeOffset - 3, at).to.equal(p.size);
          } else {
            expect(p.pos, at).to.be.greaterThan(b.offset);
            expect(p.pos + 4 + p.size, at).to.be.at.most(b.offset + b.size);
          }
          expect(b.bytes.equals(media.bytes.subarray(b.offset, b.offset + b.size)), at).to.equal(true);
          expect(b.lacing).to.equal('none');
        });
        const video = blocks.filter((b) => header.info.tracks.find((t) => t.number === b.track)?.kind === 'video');
        expect(video.filter((b) => b.keyframe).length, 'video keyframes').to.be.within(1, video.length - 1);
      });

      it('reports the header: tracks, codecs, picture size, sample rate, MSE type, and the bytes before the first Cluster', () => {
        const header = headerOf(events);
        const streams = ffprobeStreams(media.path);
        const tracks = header.info.tracks;
        expect(tracks.map((t) => t.kind)).to.deep.equal(streams.map((s) => s.codecType));
        const codecs = tracks.map((t, i) => {
          const s = streams[i];
          expect(t.mseCodec).to.equal(expectedMseCodec(s, t.codecPrivate !== undefined));
          expect(t.codecId).to.equal(`${t.kind === 'video' ? 'V' : 'A'}_${s.codecName.toUpperCase()}`);
          if (t.kind === 'video') {
            expect([t.width, t.height]).to.deep.equal([c.width, c.height]);
            expect([t.width, t.height]).to.deep.equal([s.width, s.height]);
          } else {
            expect(t.sampleRate).to.equal(c.sampleRate);
            expect(t.sampleRate).to.equal(s.sampleRate);
          }
          return t.mseCodec;
        });
        expect(header.info.mimeType).to.equal(`video/webm; codecs="${codecs.join(',')}"`);
        expect(header.info.docType).to.equal('webm');
        const av1 = tracks.find((t) => t.codecId === 'V_AV1');
        if (c.av1Record) {
          expect(av1?.codecPrivate, 'av1C record').to.not.equal(undefined);
          expect(av1?.codecPrivate?.[0]).to.equal(0x81); // marker 1, version 1
          expect(av1?.mseCodec).to.match(/^av01\.1\.\d\dM\.08$/);
        }
        const firstCluster = walkElements(media.bytes).find((e) => e.id === IDS.Cluster);
        expect(header.offset).to.equal(0);
        expect(header.bytes.length).to.equal(firstCluster?.offset);
        expect(header.bytes.equals(media.bytes.subarray(0, firstCluster?.offset))).to.equal(true);
      });

      if (c.clustersNotAtKeyframes) {
        it('has known-size clusters, some not starting at a video keyframe', () => {
          const clusters = events.filter((e) => e.type === 'cluster');
          expect(clusters.every((e) => e.type === 'cluster' && e.size !== undefined)).to.equal(true);
          const firsts = clusters.map((cl) => blocksOf(events).find((b) => b.offset > cl.offset && b.track === 1));
          expect(firsts.some((b) => b && !b.keyframe)).to.equal(true);
        });
      }

      it('reports identical events fed in 1, 7, 1400, 65536 and random-size chunks; parts and cluster headers rebuild the input', () => {
        const reference = comparable(split(media.bytes).events);
        const seed = 0x5eed + media.bytes.length;
        const random = prng(seed);
        const chunkings: [string, number | (() => number)][] = [
          ['1', 1],
          ['7', 7],
          ['1400', 1400],
          ['65536', 65536],
          [`random (seed ${seed})`, () => 1 + Math.floor(random() ** 3 * 20_000)],
        ];
        for (const [name, chunking] of chunkings) {
          const { events: got, thrown } = split(media.bytes, chunking);
          expect(thrown, name).to.equal(undefined);
          expect(comparable(got), `events with ${name}-byte chunks`).to.deep.equal(reference);
        }

        // Rebuild: header bytes, then for each block the bytes since the previous one
        // (which may only hold Cluster ID+size and Timecode, or non-block level-1
        // elements such as Cues), then the block's parts.
        const header = headerOf(events);
        const out: Buffer[] = [header.bytes];
        let pos = header.bytes.length;
        const gapIds: number[] = [];
        for (const b of blocksOf(events)) {
          const gap = media.bytes.subarray(pos, b.offset);
          for (const e of walkElements(gap)) gapIds.push(e.id);
          out.push(gap, b.bytes);
          pos = b.offset + b.size;
        }
        const tail = media.bytes.subarray(pos);
        for (const e of walkElements(tail)) gapIds.push(e.id);
        out.push(tail);
        expect(Buffer.concat(out).equals(media.bytes)).to.equal(true);
        expect(gapIds).to.not.include(IDS.SimpleBlock);
        expect(gapIds).to.not.include(IDS.BlockGroup);
        expect(gapIds).to.include(IDS.Timecode);
      });
    });
  }
});
