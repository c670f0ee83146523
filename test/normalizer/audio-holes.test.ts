import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { Normalizer, type NormalizerOptions } from '../../src/normalizer/normalizer.js';
import { opusPacketSamples } from '../../src/normalizer/opus.js';
import { mediaDir } from '../helpers/media.js';
import { feedNormalizer } from '../helpers/normalize.js';
import { parseWebm } from '../helpers/ebml-builder.js';
import { ffmpegErrors } from '../helpers/relay.js';

/** Where ffmpeg's producer below loses its audio, s: 100 ms, 300 ms, 40 ms (a MediaRecorder on a busy machine loses 50-150 ms). */
const LOST: [number, number][] = [
  [1, 1.1],
  [2.5, 2.8],
  [4, 4.04],
];

/** VP8 + Opus from ffmpeg, 6 s, with the audio of LOST cut out and the timestamps of the rest kept. */
function producerWithAudioHoles(): Buffer {
  const file = path.join(mediaDir(), 'audio-holes.webm');
  const select = LOST.map(([a, b]) => `between(t,${a},${b})`).join('+');
  const run = spawnSync('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-y',
    '-f', 'lavfi', '-i', 'testsrc=size=160x120:rate=25',
    '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-t', '6', '-af', `aselect='not(${select})'`,
    '-c:v', 'libvpx', '-deadline', 'realtime', '-g', '25', '-c:a', 'libopus', '-f', 'webm', file,
  ], { encoding: 'utf8' });
  expect(run.status, run.stderr).to.equal(0);
  return readFileSync(file);
}

function normalize(bytes: Buffer, options: Partial<NormalizerOptions> = {}) {
  const out: Buffer[] = [];
  const normalizer = new Normalizer({ init: (i) => out.push(i.bytes), cluster: (b) => out.push(b), block: (parts) => out.push(...parts) }, options);
  feedNormalizer(normalizer, bytes);
  return { output: Buffer.concat(out), stats: normalizer.stats };
}

/**
 * The audio track's holes: where a frame starts after the end of the one before by
 * 2.5 ms or more (the shortest Opus frame: silence fills a hole to within that).
 */
function audioHoles(bytes: Buffer): { at: number; ms: number }[] {
  const { headers, blocks } = parseWebm(bytes);
  const track = headers[0].info.tracks.find((t) => t.codecId === 'A_OPUS')!.number;
  const holes: { at: number; ms: number }[] = [];
  let end = -1;
  for (const block of blocks.filter((b) => b.track === track)) {
    const body = block.parts[0];
    // The frame starts after the block header: the TOC byte is the first byte after the flags.
    const samples = opusPacketSamples(body[block.timecodeOffset + 3], body[block.timecodeOffset + 4])!;
    if (end >= 0 && block.timecode - end >= 2.5) holes.push({ at: end, ms: block.timecode - end });
    end = block.timecode + samples / 48;
  }
  return holes;
}

/** The audio as ffmpeg decodes it, mono 48 kHz: ffmpeg plays the frames one after another and fills no hole. */
function decodedAudio(bytes: Buffer): Float32Array {
  const run = spawnSync('ffmpeg', ['-v', 'error', '-i', 'pipe:0', '-map', '0:a', '-f', 'f32le', '-ac', '1', '-ar', '48000', 'pipe:1'], { input: bytes, maxBuffer: 64 << 20 });
  expect(run.status, String(run.stderr)).to.equal(0);
  return new Float32Array(run.stdout.buffer, run.stdout.byteOffset, run.stdout.length / 4);
}

function peak(pcm: Float32Array, from: number, to: number): number {
  let max = 0;
  for (let i = Math.round(from * 48000); i < Math.round(to * 48000); i++) max = Math.max(max, Math.abs(pcm[i]));
  return max;
}

describe('normalizer: holes in an Opus track are filled with silence', function () {
  this.timeout(60_000);
  let producer: Buffer;

  before(() => {
    producer = producerWithAudioHoles();
  });

  it('an ffmpeg producer that lost 100 ms, 300 ms and 40 ms of audio: no hole is left, the silence decodes as silence where the audio was lost', () => {
    const before = audioHoles(producer);
    expect(before.map((h) => Math.round(h.ms / 10) * 10), 'the producer has the holes').to.deep.equal([110, 300, 40]);
    const { output, stats } = normalize(producer);
    console.log(`      holes before ${JSON.stringify(before)}; stats ${JSON.stringify(stats)}`);
    expect(audioHoles(output)).to.deep.equal([]);
    expect(stats.audioHolesFilled).to.equal(3);
    expect(ffmpegErrors(output)).to.deep.equal([]);

    // Decoded, the stream is as long as it lasts (ffmpeg would join the pieces around a hole)...
    const { headers, blocks } = parseWebm(output);
    const track = headers[0].info.tracks.find((t) => t.codecId === 'A_OPUS')!.number;
    const audio = blocks.filter((b) => b.track === track);
    const first = audio[0].timecode / 1000;
    const span = audio.at(-1)!.timecode / 1000 + 0.02 - first;
    const pcm = decodedAudio(output);
    expect(pcm.length / 48000, 'seconds of decoded audio').to.be.closeTo(span, 0.03);
    // ...silent where the audio was lost (15 ms in from each edge: the codec's overlap and pre-skip), the tone elsewhere.
    for (const hole of before) {
      const [from, to] = [hole.at / 1000 - first, (hole.at + hole.ms) / 1000 - first];
      expect(peak(pcm, from + 0.015, to - 0.015), `peak in the hole at ${from} s`).to.be.below(0.001);
      expect(peak(pcm, to + 0.05, to + 0.25), `peak after the hole at ${from} s`).to.be.above(0.05);
    }
  });

  it('a hole longer than maxSilenceFillMs is left alone (a break in the audio, not a loss)', () => {
    const { output, stats } = normalize(producer, { maxSilenceFillMs: 200 });
    expect(audioHoles(output).map((h) => Math.round(h.ms / 10) * 10)).to.deep.equal([300]);
    expect(stats.audioHolesFilled).to.equal(2);
  });

  it('the same producer with no hole gets no silence', () => {
    const whole = spawnSync('ffmpeg', [
      '-hide_banner', '-loglevel', 'error',
      '-f', 'lavfi', '-i', 'testsrc=size=160x120:rate=25', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-t', '4', '-c:v', 'libvpx', '-deadline', 'realtime', '-g', '25', '-c:a', 'libopus', '-f', 'webm', 'pipe:1',
    ], { maxBuffer: 64 << 20 });
    expect(whole.status, String(whole.stderr)).to.equal(0);
    const { output, stats } = normalize(whole.stdout);
    expect(stats.audioHolesFilled).to.equal(0);
    expect(audioHoles(output)).to.deep.equal([]);
  });
});
