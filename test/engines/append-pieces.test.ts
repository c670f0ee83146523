import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { Normalizer } from '../../src/normalizer/normalizer.js';
import { ENGINES, launchEngine, type Engine } from '../helpers/engines.js';
import { ffmpegArgs, mediaDir } from '../helpers/media.js';
import { parseWebm } from '../helpers/ebml-builder.js';
import { feedNormalizer } from '../helpers/normalize.js';
import { retryOnceIfHung } from './common.js';

/** Producer bytes through splitter and normalizer: what `/live.webm` carries for that producer. */
function normalize(bytes: Buffer): Buffer {
  const out: Buffer[] = [];
  const normalizer = new Normalizer({ init: (i) => out.push(i.bytes), cluster: (b) => out.push(b), block: (parts) => out.push(...parts) });
  feedNormalizer(normalizer, bytes);
  return Buffer.concat(out);
}

/**
 * A player gets a live stream in pieces, as the network delivers it, and appends each.
 * Firefox's MSE makes a new demuxer at every cluster that starts before the end of the
 * last frame (an audio frame spanning the keyframe), and gave that demuxer's first audio
 * frame, when it was the last one appended so far, a duration of zero unless the stream
 * said how long it lasts: the next audio frame was then a discontinuity, and everything to
 * the next keyframe was dropped (a hole of a whole GOP, now and then, with a MediaRecorder
 * or ffmpeg producer, whose Opus tracks have no DefaultDuration).
 */
describe('MSE appends in small pieces: no hole at any keyframe, in every engine', function () {
  this.timeout(180_000);
  let server: http.Server;
  let base = '';
  let stream: Buffer;
  let keyframes: number[];

  before(async function () {
    // VP8 at 20 fps with a keyframe every 2.35 s, Opus in 60 ms frames (as Chromium's
    // MediaRecorder writes them) starting 7 ms early: an audio frame spans every keyframe.
    const file = path.join(mediaDir(), 'opus60-pieces.webm');
    const args = ffmpegArgs({ videoCodec: 'vp8', seconds: 12, framerate: 20, keyframeInterval: 47, bitrate: 300 }, file);
    args.splice(args.indexOf('-f', args.indexOf('-c:a')), 0, '-frame_duration', '60');
    const run = spawnSync('ffmpeg', args, { encoding: 'utf8' });
    expect(run.status, run.stderr).to.equal(0);
    stream = normalize(readFileSync(file));
    const parsed = parseWebm(stream);
    const video = parsed.headers[0].info.tracks.find((t) => t.kind === 'video')!.number;
    keyframes = parsed.blocks.filter((b) => b.track === video && b.keyframe).map((b) => b.timecode / 1000);
    expect(keyframes.length).to.be.at.least(5);
    server = http.createServer((request, response) => {
      if (request.url === '/stream.webm') {
        response.writeHead(200, { 'content-type': 'video/webm' });
        response.end(stream);
      } else {
        response.writeHead(200, { 'content-type': 'text/html' });
        response.end('<!doctype html><video muted></video>');
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });

  after(() => server?.close());

  for (const name of ENGINES) {
    it(`${name}: the stream appended in 1,000-byte pieces is buffered as one range`, async function () {
      // Once more with a fresh browser if it hangs (a WebKitGTK bug: see EngineHungError).
      await retryOnceIfHung(`${name}: appends in pieces`, async () => {
        let engine: Engine | null = null;
        try {
          engine = await launchEngine(name);
          const page = await engine.newPage();
          await page.goto(`${base}/`);
          const result = await page.evaluate(async (piece: number) => {
            const bytes = new Uint8Array(await (await fetch('/stream.webm')).arrayBuffer());
            const video = document.querySelector('video')!;
            const source = new MediaSource();
            video.src = URL.createObjectURL(source);
            await new Promise((resolve) => source.addEventListener('sourceopen', resolve, { once: true }));
            const buffer = source.addSourceBuffer('video/webm; codecs="vp8,opus"');
            const ranges = () => Array.from({ length: buffer.buffered.length }, (_, i) => [buffer.buffered.start(i), buffer.buffered.end(i)]);
            /** The first append after which `buffered` had more than one range. */
            let firstSplit: { at: number; ranges: number[][] } | null = null;
            for (let at = 0; at < bytes.length; at += piece) {
              buffer.appendBuffer(bytes.subarray(at, at + piece));
              await new Promise((resolve, reject) => {
                buffer.addEventListener('updateend', resolve, { once: true });
                buffer.addEventListener('error', () => reject(new Error(`append at byte ${at} failed`)), { once: true });
              });
              if (!firstSplit && buffer.buffered.length > 1) firstSplit = { at, ranges: ranges() };
            }
            return { ranges: ranges(), firstSplit, error: video.error ? `${video.error.code}: ${video.error.message}` : null };
          }, 1000);
          console.log(`      ${engine.version}: buffered ${JSON.stringify(result.ranges.map((r) => r.map((t) => Number(t.toFixed(3)))))}, keyframes at ${keyframes.map((t) => t.toFixed(2)).join(', ')} s`);
          expect(result.error).to.equal(null);
          expect(result.firstSplit, 'a hole in buffered after an append').to.equal(null);
          expect(result.ranges).to.have.length(1);
          expect(result.ranges[0][0]).to.be.below(0.2);
          expect(result.ranges[0][1]).to.be.above(11.5);
        } finally {
          await engine?.close();
        }
      });
    });
  }
});
