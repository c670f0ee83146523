import { expect } from 'chai';
import { opusPacketSamples } from '../../src/normalizer/opus.js';

/** A TOC byte: configuration number, stereo flag, frame-count code (RFC 6716, 3.1). */
const toc = (config: number, code: number) => (config << 3) | code;

describe('Opus packet length from its TOC byte', () => {
  const cases: [string, number, number | undefined, number | null][] = [
    ['SILK 10 ms, one frame', toc(0, 0), undefined, 480],
    ['SILK 60 ms, one frame (a browser MediaRecorder)', toc(3, 0), undefined, 2880],
    ['SILK 40 ms, two equal frames', toc(10, 1), undefined, 3840],
    ['Hybrid 20 ms, two frames of different sizes', toc(13, 2), undefined, 1920],
    ['CELT 2.5 ms, eight frames (code 3)', toc(16, 3), 0x08, 960],
    ['CELT 20 ms, one frame (GStreamer, ffmpeg)', toc(31, 0), undefined, 960],
    ['CELT 20 ms, six frames: 120 ms, the most a packet holds', toc(31, 3), 0x86, 5760],
    ['CELT 20 ms, seven frames: too long', toc(31, 3), 0x07, null],
    ['code 3 with no frame count byte', toc(31, 3), undefined, null],
    ['code 3 with zero frames', toc(31, 3), 0x40, null],
  ];
  for (const [what, first, second, samples] of cases) {
    it(`${what}: ${samples ?? 'not valid'}`, () => {
      expect(opusPacketSamples(first, second)).to.equal(samples);
    });
  }
});
