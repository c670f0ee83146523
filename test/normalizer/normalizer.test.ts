import { spawnSync } from 'node:child_process';
import { expect } from 'chai';
import type { WebmBlock } from '../../src/webm/splitter.js';
import { Normalizer, type NormalizedStream } from '../../src/normalizer/normalizer.js';
import type { InitSegment } from '../../src/normalizer/init-segment.js';
import { ffmpegErrors } from '../helpers/relay.js';
import { feedNormalizer } from '../helpers/normalize.js';
import { recordEncoder } from '../helpers/record.js';
import { IDS, cluster, parseWebm, simpleBlock, streamHeader, walkElements, type ParsedWebm } from '../helpers/ebml-builder.js';

/** Runs producers' streams, one after another, through splitter and normalizer; returns the output bytes. */
function normalize(...producers: Buffer[]): { output: Buffer; inits: InitSegment[]; normalizer: Normalizer } {
  const out: Buffer[] = [];
  const inits: InitSegment[] = [];
  const sink: NormalizedStream = {
    init: (init) => {
      inits.push(init);
      out.push(init.bytes);
    },
    cluster: (bytes) => out.push(bytes),
    block: (parts) => out.push(...parts),
  };
  const normalizer = new Normalizer(sink);
  for (const bytes of producers) feedNormalizer(normalizer, bytes);
  return { output: Buffer.concat(out), inits, normalizer };
}

/** The frame data of a block (after its flags byte): what the normalizer must never change. */
function payloadOf(b: WebmBlock): Buffer {
  const whole = b.parts[0];
  if (b.kind === 'simple') return whole.subarray(b.timecodeOffset + 3);
  const block = walkElements(whole, 0, whole.length).find((e) => e.id === IDS.Block)!;
  return whole.subarray(b.timecodeOffset + 3, block.dataEnd);
}

/** How many times a block's timestamp is below the one before it, across tracks. */
function backwardSteps(blocks: readonly WebmBlock[]): number {
  let steps = 0;
  for (let i = 1; i < blocks.length; i++) if (blocks[i].timecode < blocks[i - 1].timecode) steps++;
  return steps;
}

function assertCanonical(parsed: ParsedWebm, videoTrack: number): void {
  expect(parsed.clusters.length).to.be.greaterThan(1);
  for (const cluster of parsed.clusters) {
    const first = cluster.blocks[0];
    expect(first.track, `cluster ${cluster.timecode} starts with track ${first.track}`).to.equal(videoTrack);
    expect(first.keyframe, `cluster ${cluster.timecode} starts with a keyframe`).to.equal(true);
    expect(first.timecode).to.equal(cluster.timecode);
    // Every video keyframe starts a cluster: every cluster is a join point, and only those.
    const laterKeyframes = cluster.blocks.slice(1).filter((b) => b.track === videoTrack && b.keyframe);
    expect(laterKeyframes, `keyframes inside cluster ${cluster.timecode}`).to.have.length(0);
  }
  expect(backwardSteps(parsed.blocks), 'blocks going back in time').to.equal(0);
}

describe('normalizer on real encoder output', function () {
  this.timeout(120_000);
  let vp8: Buffer;
  let vp9: Buffer;

  before(async () => {
    [vp8, vp9] = await Promise.all([recordEncoder(4), recordEncoder(3, { videoCodec: 'vp9' })]);
  });

  it('GStreamer VP8 + Opus: keyframe clusters, blocks in time order, frame bytes untouched', () => {
    const input = parseWebm(vp8);
    const { output, normalizer } = normalize(vp8);
    const result = parseWebm(output);
    console.log(
      `      input: ${input.clusters.length} clusters, ${backwardSteps(input.blocks)} backward steps; ` +
        `output: ${result.clusters.length} clusters, stats ${JSON.stringify(normalizer.stats)}`,
    );
    assertCanonical(result, 1);
    // Per track, the same frames with the same bytes and timestamps, in the same order,
    // minus what came before the first video keyframe.
    const firstKeyframe = input.blocks.find((b) => b.track === 1 && b.keyframe)!.timecode;
    const perTrack = (blocks: WebmBlock[], track: number) =>
      blocks.filter((b) => b.track === track && b.timecode >= firstKeyframe).map((b) => [b.timecode, payloadOf(b).toString('base64')]);
    for (const track of [1, 2]) {
      expect(perTrack(result.blocks, track), `track ${track}`).to.deep.equal(perTrack(input.blocks, track));
    }
    expect(ffmpegErrors(output)).to.deep.equal([]);
  });

  it('ffmpeg VP9 + Opus with known-size clusters cut by time: re-clustered at keyframes', function () {
    const ffmpeg = spawnSync(
      'ffmpeg',
      ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=30:duration=4', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000:duration=4',
        '-c:v', 'libvpx-vp9', '-deadline', 'realtime', '-cpu-used', '8', '-g', '45', '-b:v', '400k', '-c:a', 'libopus',
        '-cluster_time_limit', '700', '-f', 'webm', '-live', '1', 'pipe:1'],
      { maxBuffer: 64 << 20 },
    );
    expect(ffmpeg.status, ffmpeg.stderr.toString()).to.equal(0);
    const input = parseWebm(ffmpeg.stdout);
    const misaligned = input.clusters.filter((c) => !(c.blocks[0]?.track === 1 && c.blocks[0].keyframe));
    expect(misaligned.length, 'ffmpeg clusters that do not start at a video keyframe').to.be.greaterThan(0);
    const { output } = normalize(ffmpeg.stdout);
    assertCanonical(parseWebm(output), 1);
    expect(ffmpegErrors(output)).to.deep.equal([]);
  });

  it('an audio-only stream is cut into clusters of about a second, in time order', () => {
    const ffmpeg = spawnSync(
      'ffmpeg',
      ['-v', 'error', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000:duration=5', '-c:a', 'libopus', '-f', 'webm', '-live', '1', 'pipe:1'],
      { maxBuffer: 16 << 20 },
    );
    expect(ffmpeg.status, ffmpeg.stderr.toString()).to.equal(0);
    const { output, inits } = normalize(ffmpeg.stdout);
    expect(inits[0].info.mimeType).to.equal('audio/webm; codecs="opus"');
    const result = parseWebm(output);
    const starts = result.clusters.map((c) => c.timecode);
    const spans = starts.slice(1).map((t, i) => t - starts[i]);
    expect(result.clusters.length, `cluster starts ${starts}`).to.be.within(4, 6);
    for (const span of spans) expect(span, `cluster spans ${spans}`).to.be.within(1000, 1040);
    expect(backwardSteps(result.blocks)).to.equal(0);
    expect(result.blocks.length).to.equal(parseWebm(ffmpeg.stdout).blocks.length);
    expect(ffmpegErrors(output)).to.deep.equal([]);
  });

  it('a producer restarted with the same tracks continues the stream: one header, time goes on', () => {
    const { output, inits, normalizer } = normalize(vp8, vp8);
    const result = parseWebm(output);
    expect(inits).to.have.length(1);
    expect(result.headers).to.have.length(1);
    expect(normalizer.stats.seamlessRestarts).to.equal(1);
    assertCanonical(result, 1);
    const single = parseWebm(normalize(vp8).output);
    const duration = single.blocks.at(-1)!.timecode - single.blocks[0].timecode;
    expect(result.blocks.at(-1)!.timecode - result.blocks[0].timecode).to.be.greaterThan(2 * duration);
    expect(ffmpegErrors(output)).to.deep.equal([]);
  });

  it('a producer with other tracks gets a new init segment; time still goes forward', () => {
    const { output, inits } = normalize(vp8, vp9);
    expect(inits.map((i) => i.info.mimeType)).to.deep.equal(['video/webm; codecs="vp8,opus"', 'video/webm; codecs="vp9,opus"']);
    const result = parseWebm(output);
    expect(result.headers).to.have.length(2);
    expect(backwardSteps(result.blocks)).to.equal(0);
  });

  it('a video track arriving 1200 ms behind its audio (past the reorder window and the frame hold) is moved forward, never two frames on one timestamp', () => {
    const source = parseWebm(vp8);
    const out: Buffer[] = [];
    const normalizer = new Normalizer({ init: (init) => out.push(init.bytes), cluster: (bytes) => out.push(bytes), block: (parts) => out.push(...parts) });
    normalizer.header(source.headers[0]);
    // What a starved encoder's muxer sends: audio in time, video 1200 ms late.
    const arrival = (b: WebmBlock) => b.timecode + (b.track === 1 ? 1200 : 0);
    for (const block of [...source.blocks].sort((a, b) => arrival(a) - arrival(b))) normalizer.block(block);
    normalizer.flush();
    const output = Buffer.concat(out);
    const result = parseWebm(output);
    expect(normalizer.stats.clamped).to.be.greaterThan(0);
    expect(backwardSteps(result.blocks), 'blocks going back in time').to.equal(0);
    for (const track of [1, 2]) {
      const times = result.blocks.filter((b) => b.track === track).map((b) => b.timecode);
      const repeated = times.filter((t, i) => i > 0 && t <= times[i - 1]).length;
      expect(repeated, `track ${track}: blocks not after the one before`).to.equal(0);
    }
    expect(result.blocks.filter((b) => b.track === 1).length, 'every video frame from the first keyframe on').to.equal(source.blocks.filter((b) => b.track === 1).length);
    // Frames 1 ms apart: decoded at millisecond resolution (ffmpeg's default output time
    // base follows the average frame rate and would count them as duplicates).
    const decode = spawnSync('ffmpeg', ['-hide_banner', '-v', 'error', '-i', 'pipe:0', '-fps_mode', 'passthrough', '-enc_time_base', '1:1000', '-f', 'null', '-'], { input: output, encoding: 'utf8' });
    expect(decode.stderr.trim()).to.equal('');
  });

  it('the init segment is live: unknown-size Segment, no SeekHead, Cues or Duration', () => {
    const { inits } = normalize(vp8);
    const bytes = inits[0].bytes;
    const segment = bytes.indexOf(Buffer.from([0x18, 0x53, 0x80, 0x67]));
    expect(bytes.subarray(segment + 4, segment + 12)).to.deep.equal(Buffer.from([1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    for (const id of [[0x11, 0x4d, 0x9b, 0x74], [0x1c, 0x53, 0xbb, 0x6b], [0x44, 0x89]]) {
      expect(bytes.indexOf(Buffer.from(id)), `element ${Buffer.from(id).toString('hex')}`).to.equal(-1);
    }
    const header = parseWebm(bytes.length ? Buffer.concat([bytes, Buffer.from([0x1f, 0x43, 0xb6, 0x75, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])]) : bytes).headers[0];
    expect(header.info.tracks.map((t) => t.codecId)).to.deep.equal(['V_VP8', 'A_OPUS']);
    // GStreamer gives both tracks a DefaultDuration; the video track's is dropped, so a
    // skipped frame is not a discontinuity for MSE.
    const defaultDurations = (b: Buffer) => b.toString('hex').match(/23e383/g)?.length ?? 0;
    expect(defaultDurations(parseWebm(vp8).headers[0].bytes)).to.equal(2);
    expect(defaultDurations(bytes)).to.equal(1);
  });
});

describe('normalizer: the seam between two producers', () => {
  /** A producer's stream: its header, then one cluster of these blocks (track 1 VP8, track 2 Opus) in the order given. */
  function producer(blocks: { track: 1 | 2; at: number; keyframe?: boolean }[]): Buffer {
    return Buffer.concat([streamHeader(), cluster(0, blocks.map((b) => simpleBlock({ track: b.track, relative: b.at, keyframe: b.keyframe ?? b.track === 2 })))]);
  }
  /** Video every 33 ms and audio every 20 ms from 0 to `until`, in time order. */
  const inTimeOrder = (until: number) => {
    const blocks: { track: 1 | 2; at: number; keyframe?: boolean }[] = [];
    for (let t = 0; t <= until; t += 33) blocks.push({ track: 1, at: t, keyframe: t === 0 });
    for (let t = 0; t <= until; t += 20) blocks.push({ track: 2, at: t });
    return blocks.sort((a, b) => a.at - b.at || a.track - b.track);
  };

  it("a restarted producer whose audio comes before its first video frame: that frame still goes a whole frame after the last one, and the audio keeps its distance to it", () => {
    // The first producer stops on an audio block 10 ms after its last video frame (990).
    const first = producer(inTimeOrder(1000));
    // The second sends audio stamped 40 ms before its keyframe stamped 0 (an encoder whose
    // video starts late), then both in time order.
    const second = producer([{ track: 2, at: 40 }, ...inTimeOrder(1000).filter((b) => b.track === 1 || b.at > 40)]);
    const { output, normalizer } = normalize(first, second);
    expect(normalizer.stats.seamlessRestarts).to.equal(1);
    const blocks = parseWebm(output).blocks;
    const video = blocks.filter((b) => b.track === 1).map((b) => b.timecode);
    const gaps = video.slice(1).map((t, i) => t - video[i]);
    expect(video, 'video frames of both producers').to.have.length(62);
    expect(Math.min(...gaps), `gaps between video frames: ${gaps.join(' ')}`).to.equal(33);
    const seam = video.indexOf(video[30] + 33);
    expect(seam, 'the second producer continues one frame after the first').to.equal(31);
    // Its audio keeps its time against its video: every 20 ms from 60 ms after the keyframe
    // (the block stamped 40 came before any video, and nothing goes out before a keyframe).
    const audioAfter = blocks.filter((b) => b.track === 2 && b.timecode >= video[31]).map((b) => b.timecode - video[31]);
    expect(audioAfter.slice(0, 4)).to.deep.equal([60, 80, 100, 120]);
    expect(backwardSteps(blocks)).to.equal(0);
  });

  // 30 frames a second, in whole milliseconds as an encoder writes them, from `start`, the
  // frames `kept` lets through; audio every 20 ms from 0.
  const at30fps = (start: number, kept = (_n: number) => true) => {
    const blocks: { track: 1 | 2; at: number; keyframe?: boolean }[] = [];
    for (let n = 0; n < 30; n++) if (kept(n)) blocks.push({ track: 1, at: start + Math.round((n * 1000) / 30), keyframe: n === 0 });
    for (let t = 0; t <= 1000; t += 20) blocks.push({ track: 2, at: t });
    return blocks.sort((a, b) => a.at - b.at || a.track - b.track);
  };

  /** Both producers' frames on ffmpeg's grid at 30 frames a second, within a tenth of a frame of their slot, no two in one slot. */
  const expectOnGrid = (video: number[]) => {
    const slots = video.map((t) => (t * 30) / 1000);
    const offGrid = slots.filter((slot) => Math.abs(slot - Math.round(slot)) > 0.1);
    expect(offGrid, `frames off the grid, in frames: ${slots.map((x) => x.toFixed(2)).join(' ')}`).to.deep.equal([]);
    expect(new Set(slots.map(Math.round)).size).to.equal(video.length);
  };

  /**
   * A first producer of `firstFrames` frames (of the 30 it would make in a second, `kept`),
   * then one whose video starts 50 ms after its audio: the first audio block places it one
   * frame after the last block out, which puts its video 17 ms off the first producer's
   * frame grid. Checks both producers' frames are on the grid, the second a whole number
   * of frames after the first and no more than needed, and nothing goes backwards.
   */
  const expectSeamOnGrid = (firstFrames: number, kept?: (n: number) => boolean) => {
    const { output, normalizer } = normalize(producer(at30fps(0, kept)), producer(at30fps(50)));
    expect(normalizer.stats.seamlessRestarts).to.equal(1);
    const blocks = parseWebm(output).blocks;
    const video = blocks.filter((b) => b.track === 1).map((b) => b.timecode);
    expect(video, 'video frames of both producers').to.have.length(firstFrames + 30);
    expectOnGrid(video);
    expect(video[firstFrames] - video[firstFrames - 1]).to.be.within(130, 137);
    expect(backwardSteps(blocks)).to.equal(0);
    return { blocks, secondStart: video[firstFrames] };
  };

  it('a restarted producer whose video starts 50 ms after its audio: its frames go on the last one\'s grid, a whole number of frames after it', () => {
    const { blocks, secondStart } = expectSeamOnGrid(30);
    // The audio kept its distance to the video: 50 ms before its first frame, every 20 ms.
    const audioAfter = blocks.filter((b) => b.track === 2 && b.timecode >= secondStart).map((b) => b.timecode - secondStart);
    expect(audioAfter.slice(0, 3)).to.deep.equal([10, 30, 50]);
  });

  it('the same after a producer that dropped every third frame (an overloaded encoder): the grid is the rate\'s, not the mean spacing', () => {
    expectSeamOnGrid(20, (n) => n % 3 !== 1);
  });
});
