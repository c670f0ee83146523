import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import type { WebmBlock } from '../../src/webm/splitter.js';
import { Normalizer, type NormalizedStream } from '../../src/normalizer/normalizer.js';
import { ffmpegArgs, gstWebm, mediaDir } from '../helpers/media.js';
import { feedNormalizer } from '../helpers/normalize.js';
import { recordEncoder } from '../helpers/record.js';
import { IDS, cluster, ebmlHeader, el, info, parseWebm, simpleBlock, stringEl, uintEl, unknownEl } from '../helpers/ebml-builder.js';
import { ffmpegErrors } from '../helpers/relay.js';

/** Producer bytes through splitter and normalizer, in socket-sized chunks; also when each video frame came out. */
function normalize(bytes: Buffer, options = {}) {
  const out: Buffer[] = [];
  let fed = -1;
  /** For each video frame out, the timestamp of the newest block fed in at that moment: how long it was held. */
  const heldFor: number[] = [];
  const sink: NormalizedStream = {
    init: (init) => out.push(init.bytes),
    cluster: (b) => out.push(b),
    block: (parts, track, time) => {
      out.push(...parts);
      if (track === 1) heldFor.push(fed - time);
    },
  };
  const normalizer = new Normalizer(sink, options);
  feedNormalizer(normalizer, bytes, (b) => (fed = Math.max(fed, b.timecode)));
  return { output: Buffer.concat(out), normalizer, heldFor };
}

/**
 * What MSE's coded frame processing sees on the video track: for each frame, the gap to
 * the next and its duration. A gap larger than the frame's duration is a hole in
 * `buffered`; larger than twice, a discontinuity (everything up to the next keyframe dropped).
 */
function videoGaps(blocks: WebmBlock[], track = 1) {
  const video = blocks.filter((b) => b.track === track);
  const holes: string[] = [];
  let withDuration = 0;
  for (let i = 0; i + 1 < video.length; i++) {
    const gap = video[i + 1].timecode - video[i].timecode;
    if (video[i].duration !== undefined) withDuration++;
    if (video[i].duration !== gap) holes.push(`${video[i].timecode}: duration ${video[i].duration}, next frame ${gap} later`);
  }
  return { frames: video.length, withDuration, holes, maxGap: Math.max(...video.slice(1).map((b, i) => b.timecode - video[i].timecode)) };
}

const keyframeTimes = (blocks: WebmBlock[], track = 1) => blocks.filter((b) => b.track === track && b.keyframe).map((b) => b.timecode);

/** A VP8 + Opus stream from ffmpeg in which frames come at irregular gaps of up to 0.5 s (a screen capture, a MediaRecorder). */
function variableFrameRate(): Buffer {
  const file = path.join(mediaDir(), 'vfr.webm');
  const args = ffmpegArgs({ videoCodec: 'vp8', seconds: 6, keyframeInterval: 30 }, file);
  // Keep a random quarter of the frames, and at least every 15th (0.5 s at 30 fps).
  args.splice(args.indexOf('-f', args.indexOf('-c:v')), 0, '-vf', "select='lt(random(0),0.25)+not(mod(n,15))'", '-fps_mode', 'vfr');
  const run = spawnSync('ffmpeg', args, { encoding: 'utf8' });
  expect(run.status, run.stderr).to.equal(0);
  return readFileSync(file);
}

/** mpv's complaints while playing `bytes` (it reads the whole file with null outputs). */
function mpvWarnings(bytes: Buffer): string[] {
  const file = path.join(mediaDir(), `mpv-${Date.now()}.webm`);
  writeFileSync(file, bytes);
  const run = spawnSync('mpv', ['--no-config', '--vo=null', '--ao=null', '--untimed', '--msg-level=all=warn', file], { encoding: 'utf8', timeout: 60_000 });
  return `${run.stdout}\n${run.stderr}`.split('\n').filter((l) => /keyframe|broken/i.test(l));
}

describe('normalizer: frame durations and keyframe flags', function () {
  this.timeout(120_000);
  let encoder: Buffer;

  before(async () => {
    encoder = await recordEncoder(4);
  });

  it("GStreamer encoder output: every video frame lasts until the next, keyframes kept, one frame's latency", () => {
    const input = parseWebm(encoder);
    const { output, normalizer, heldFor } = normalize(encoder);
    const result = parseWebm(output);
    const gaps = videoGaps(result.blocks);
    const mean = (list: number[]) => list.slice(0, -1).reduce((a, b) => a + b, 0) / (list.length - 1);
    const meanHold = mean(heldFor);
    // The same stream with frames let out as soon as the tracks are in order (no durations).
    const unheld = mean(normalize(encoder, { holdVideoFrames: false }).heldFor);
    const frameInterval = gaps.frames > 1 ? (result.blocks.filter((b) => b.track === 1).at(-1)!.timecode - result.blocks.find((b) => b.track === 1)!.timecode) / (gaps.frames - 1) : 0;
    console.log(
      `      ${gaps.frames} frames, ${gaps.withDuration} with BlockDuration, largest gap ${gaps.maxGap} ms; ` +
        `a frame leaves ${meanHold.toFixed(1)} ms of stream time after it is due, ${unheld.toFixed(1)} ms without holding ` +
        `(cost ${(meanHold - unheld).toFixed(1)} ms, frame interval ${frameInterval.toFixed(1)} ms); stats ${JSON.stringify(normalizer.stats)}`,
    );
    // A frame more than maxFrameHoldMs (1 s) before the next (a starved encoder on a very
    // busy machine) leaves with the time waited as its duration: the promise ends there.
    const overlong = gaps.holes.filter((h) => Number(/next frame (\d+) later/.exec(h)![1]) > 1000);
    expect(gaps.holes.filter((h) => !overlong.includes(h)), 'frames whose duration does not reach the next').to.deep.equal([]);
    expect(gaps.withDuration).to.equal(gaps.frames - 1);
    expect(result.blocks.filter((b) => b.track === 1).every((b) => b.kind === 'group')).to.equal(true);
    const firstKeyframe = keyframeTimes(input.blocks)[0];
    expect(keyframeTimes(result.blocks)).to.deep.equal(keyframeTimes(input.blocks).filter((t) => t >= firstKeyframe));
    // The latency it costs: a frame waits for the next one, about one frame interval.
    expect(meanHold - unheld).to.be.within(0, 1.5 * frameInterval);
    expect(normalizer.stats.guessedDurations, 'the last frame, at the end of the stream, and the overlong waits').to.equal(1 + overlong.length);
    expect(ffmpegErrors(output)).to.deep.equal([]);
  });

  it('a variable-frame-rate producer (gaps up to 0.5 s): durations reach the next frame, no gap for MSE to drop', () => {
    const vfr = variableFrameRate();
    const before = videoGaps(parseWebm(vfr).blocks);
    expect(before.maxGap, 'the input has long gaps').to.be.within(300, 520);
    const { output, normalizer } = normalize(vfr);
    const result = parseWebm(output);
    const gaps = videoGaps(result.blocks);
    console.log(`      ${gaps.frames} frames, largest gap ${gaps.maxGap} ms, stats ${JSON.stringify(normalizer.stats)}`);
    expect(gaps.holes).to.deep.equal([]);
    expect(gaps.maxGap).to.equal(before.maxGap);
    expect(ffmpegErrors(output)).to.deep.equal([]);
  });

  it('a frame with no successor goes out after maxFrameHoldMs of wall-clock time, lasting the time waited', async () => {
    const source = parseWebm(gstWebm({ audioCodec: 'none', seconds: 1 }).bytes);
    const out: { track: number; time: number; parts: Buffer[] }[] = [];
    let flushes = 0;
    let init: Buffer = Buffer.alloc(0);
    const normalizer = new Normalizer(
      { init: (i) => (init = i.bytes), cluster: () => {}, block: (parts, track, time) => out.push({ parts, track, time }), flush: () => flushes++ },
      { maxFrameHoldMs: 150 },
    );
    normalizer.header(source.headers[0]);
    normalizer.block(source.blocks[0]);
    normalizer.block(source.blocks[1]);
    expect(out, 'the first frame leaves when the second arrives').to.have.length(1);
    await new Promise((r) => setTimeout(r, 400));
    expect(out, 'the second frame, let go by its timer').to.have.length(2);
    expect(flushes).to.equal(1);
    const [second] = parseWebm(Buffer.concat([init, clusterBytes(out)])).blocks.slice(1);
    expect(second.duration).to.be.within(140, 400);
    normalizer.flush();
  });

  it("a video track's AlphaMode is left out: frames go out without the BlockAdditions that carry alpha", () => {
    const ALPHA_MODE = 0x53c0;
    const video = el(IDS.Video, [uintEl(IDS.PixelWidth, 640), uintEl(IDS.PixelHeight, 480), uintEl(ALPHA_MODE, 1)]);
    const entry = el(IDS.TrackEntry, [uintEl(IDS.TrackNumber, 1), uintEl(IDS.TrackType, 1), stringEl(IDS.CodecID, 'V_VP8'), video]);
    const producer = Buffer.concat([
      ebmlHeader(), unknownEl(IDS.Segment, 8), info(), el(IDS.Tracks, [entry]),
      cluster(0, [simpleBlock({ track: 1, relative: 0, keyframe: true }), simpleBlock({ track: 1, relative: 50 })]),
    ]);
    expect(producer.indexOf(Buffer.from([0x53, 0xc0, 0x81, 0x01]))).to.be.greaterThan(0);
    const { output } = normalize(producer);
    const header = parseWebm(output).headers[0];
    expect(output.indexOf(Buffer.from([0x53, 0xc0])), 'AlphaMode in the output').to.equal(-1);
    expect(header.info.tracks[0]).to.include({ width: 640, height: 480, codecId: 'V_VP8' });
  });

  it("Opus frames of a track without DefaultDuration (ffmpeg, a browser's MediaRecorder) leave with their own length as BlockDuration; with one (GStreamer) as they came", () => {
    // ffmpeg writes no DefaultDuration for Opus; 60 ms frames, as Chromium's MediaRecorder writes.
    const file = path.join(mediaDir(), 'opus60.webm');
    const args = ffmpegArgs({ videoCodec: 'vp8', seconds: 3, keyframeInterval: 40 }, file);
    args.splice(args.indexOf('-f', args.indexOf('-c:a')), 0, '-frame_duration', '60');
    const run = spawnSync('ffmpeg', args, { encoding: 'utf8' });
    expect(run.status, run.stderr).to.equal(0);
    const producer = readFileSync(file);
    const input = parseWebm(producer);
    const audioTrack = input.headers[0].info.tracks.find((t) => t.kind === 'audio')!;
    expect(audioTrack.defaultDuration, 'ffmpeg writes no DefaultDuration for audio').to.equal(undefined);
    const { output } = normalize(producer);
    const audio = parseWebm(output).blocks.filter((b) => b.track === audioTrack.number);
    console.log(`      ${audio.length} Opus frames out, durations ${[...new Set(audio.map((b) => b.duration))].join(', ')} ms, kinds ${[...new Set(audio.map((b) => b.kind))].join(', ')}`);
    expect(audio.length).to.be.greaterThan(40);
    // ffmpeg writes its last packet as a BlockGroup with DiscardPadding: that one goes on as it came.
    const last = audio.pop()!;
    expect(input.blocks.filter((b) => b.track === audioTrack.number && b.kind === 'group')).to.have.length(1);
    expect(last.kind).to.equal('group');
    expect(audio.every((b) => b.kind === 'group' && b.duration === 60 && b.keyframe)).to.equal(true);
    // Each frame ends where the next begins.
    expect([...audio, last].slice(1).filter((b, i) => b.timecode - audio[i].timecode !== audio[i].duration)).to.deep.equal([]);
    expect(ffmpegErrors(output)).to.deep.equal([]);
    expect(mpvWarnings(output)).to.deep.equal([]);

    const gst = gstWebm({ audioCodec: 'opus', seconds: 2 }).bytes;
    const gstInput = parseWebm(gst);
    const gstAudioTrack = gstInput.headers[0].info.tracks.find((t) => t.kind === 'audio')!;
    expect(gstAudioTrack.defaultDuration, 'GStreamer writes a DefaultDuration for Opus').to.equal(20_000_000);
    const gstAudio = parseWebm(normalize(gst).output).blocks.filter((b) => b.track === gstAudioTrack.number);
    expect(gstAudio.length).to.be.greaterThan(20);
    expect(gstAudio.every((b) => b.keyframe)).to.equal(true);
    // Only the blocks GStreamer itself wrote as BlockGroups (its last, with DiscardPadding) are groups.
    const kinds = (blocks: WebmBlock[]) => blocks.filter((b) => b.track === gstAudioTrack.number).map((b) => b.kind);
    expect(kinds(gstAudio)).to.deep.equal(kinds(gstInput.blocks).slice(-gstAudio.length));
  });

  for (const audioCodec of ['opus', 'vorbis'] as const) {
    it(`every ${audioCodec} block leaves with the keyframe flag; mpv finds no incorrect keyframe flag`, () => {
      const media = gstWebm({ audioCodec, seconds: 2 });
      const inputAudio = parseWebm(media.bytes).blocks.filter((b) => b.track === 2);
      const { output } = normalize(media.bytes);
      const audio = parseWebm(output).blocks.filter((b) => b.track === 2);
      console.log(`      input: ${inputAudio.filter((b) => b.keyframe).length} of ${inputAudio.length} ${audioCodec} blocks flagged; output: ${audio.filter((b) => b.keyframe).length} of ${audio.length}`);
      expect(audio.length).to.be.greaterThan(20);
      expect(audio.filter((b) => !b.keyframe)).to.have.length(0);
      expect(mpvWarnings(output)).to.deep.equal([]);
    });
  }
});

/** A Cluster at 0 holding the given blocks, as bytes after a header. */
function clusterBytes(blocks: { parts: Buffer[] }[]): Buffer {
  const header = Buffer.from([0x1f, 0x43, 0xb6, 0x75, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xe7, 0x81, 0x00]);
  return Buffer.concat([header, ...blocks.flatMap((b) => b.parts)]);
}
