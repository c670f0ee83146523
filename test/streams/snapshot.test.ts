/**
 * `/<name>/snapshot.jpg`: the stream's latest keyframe as a JPEG of the stream's size,
 * `503` while the stream is not live, and a new picture once a new keyframe shows
 * something else.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { cpuHog, killTracked, type Producer } from '../helpers/faults.js';
import { ffprobeStreams } from '../helpers/media.js';
import { freePort, waitFor } from '../helpers/relay.js';
import { ffmpegTcpProducer, startConfigRelay, streamStats, tempDir, waitListening, waitStreamsLive, type ConfigRelay } from '../helpers/streams.js';
import { decodeErrors, shutdown } from '../helpers/viewers.js';

interface Snapshot {
  status: number;
  type: string | null;
  body: Buffer;
}

async function snapshot(relay: ConfigRelay, name: string): Promise<Snapshot> {
  const response = await fetch(`${relay.url}/${name}/snapshot.jpg`);
  return { status: response.status, type: response.headers.get('content-type'), body: Buffer.from(await response.arrayBuffer()) };
}

/** The picture as 8-bit luma, one byte a pixel, decoded by ffmpeg. */
function luma(jpeg: Buffer): Buffer {
  const result = spawnSync('ffmpeg', ['-hide_banner', '-v', 'error', '-i', 'pipe:0', '-f', 'rawvideo', '-pix_fmt', 'gray', 'pipe:1'], { input: jpeg, maxBuffer: 64 << 20 });
  if (result.status !== 0) throw new Error(`ffmpeg could not decode the JPEG: ${result.stderr.toString()}`);
  return result.stdout;
}

/** Pixels whose luma differs by more than a quarter of the range. */
function changedPixels(a: Buffer, b: Buffer): number {
  expect(a.length).to.equal(b.length);
  let changed = 0;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i] - b[i]) > 64) changed++;
  return changed;
}

/** Checks a snapshot is a whole JPEG that ffmpeg decodes without a word, of the given size. */
async function expectJpeg(shot: Snapshot, width: number, height: number, what: string): Promise<void> {
  expect(shot.status, what).to.equal(200);
  expect(shot.type, what).to.equal('image/jpeg');
  expect([...shot.body.subarray(0, 3)], `${what}: SOI marker`).to.deep.equal([0xff, 0xd8, 0xff]);
  expect([...shot.body.subarray(-2)], `${what}: EOI marker`).to.deep.equal([0xff, 0xd9]);
  expect(await decodeErrors(shot.body), `${what}: ffmpeg -v error`).to.deep.equal([]);
  const file = path.join(tempDir(), 'snapshot.jpg');
  writeFileSync(file, shot.body);
  const [stream] = ffprobeStreams(file);
  expect(stream, what).to.include({ codecName: 'mjpeg', width, height });
}

describe('streams: snapshot.jpg', function () {
  this.timeout(90_000);
  let relay: ConfigRelay | null = null;
  let laterPort = 0;
  const producers: Producer[] = [];

  before(async function () {
    laterPort = await freePort();
    relay = await startConfigRelay(
      [
        'streams:',
        '  moving:',
        // The bars move 3 px a frame and repeat every 107 frames: keyframes 10 frames apart all differ.
        '    encoder: { video-source: videotestsrc is-live=true pattern=smpte horizontal-speed=3, audio-source: none, width: 320, height: 240, framerate: 15, video-bitrate: 300, keyframe-interval: 0.7 }',
        // A keyframe every other frame: a new picture to decode at almost every request.
        '  rapid:',
        '    encoder: { video-source: videotestsrc is-live=true pattern=ball, audio-source: none, width: 160, height: 120, framerate: 10, video-bitrate: 200, keyframe-interval: 0.2 }',
        '  later:',
        `    listen: tcp://127.0.0.1:${laterPort}`,
        '  empty:',
        '    publish: { token: 0123456789abcdef0123 }',
        '',
      ].join('\n'),
    );
    await waitListening(relay, laterPort);
  });

  after(async function () {
    await killTracked();
    await shutdown(relay);
  });

  it('503 for a stream that is not live yet and for one with no producer; 404 for no such stream', async function () {
    for (const name of ['later', 'empty']) {
      const shot = await snapshot(relay!, name);
      expect(shot.status, name).to.equal(503);
      expect(shot.body.toString(), name).to.match(/not live/);
    }
    expect((await snapshot(relay!, 'nosuch')).status).to.equal(404);
  });

  it('is a JPEG of the stream, at its size, that decodes', async function () {
    await waitStreamsLive(relay!, ['moving'], 20_000);
    await expectJpeg(await snapshot(relay!, 'moving'), 320, 240, 'moving');
  });

  it('is the same picture for the same keyframe, and a different one after the next keyframe', async function () {
    const keyframes = async () => (await streamStats(relay!, 'moving')).keyframeClusters;
    // Two requests within one keyframe interval get the one cached picture.
    let same = false;
    for (let attempt = 0; attempt < 5 && !same; attempt++) {
      const before = await keyframes();
      const [a, b] = [await snapshot(relay!, 'moving'), await snapshot(relay!, 'moving')];
      if ((await keyframes()) !== before) continue;
      expect(b.body.equals(a.body), 'the same keyframe, the same JPEG').to.equal(true);
      same = true;
    }
    expect(same, 'two requests within one keyframe interval').to.equal(true);

    const first = await snapshot(relay!, 'moving');
    const firstKeyframes = await keyframes();
    // The next keyframe, and one more: the first may have been on its way during the request.
    await waitFor('two more keyframes', async () => (await keyframes()) >= firstKeyframes + 2, 25_000);
    const second = await snapshot(relay!, 'moving');
    await expectJpeg(second, 320, 240, 'the second snapshot');
    expect(second.body.equals(first.body), 'a new keyframe, a new JPEG').to.equal(false);
    const changed = changedPixels(luma(first.body), luma(second.body));
    // The bars have moved by tens of pixels: thousands of pixels change, not a few of noise.
    expect(changed, 'pixels that changed').to.be.at.least(2000);
    console.log(`      two keyframes apart: ${changed} of ${320 * 240} pixels changed; JPEGs of ${first.body.length} and ${second.body.length} bytes`);
  });

  it('answers every request with a picture, one decoder run per keyframe, 120 keyframes in a row on a busy machine', async function () {
    await waitStreamsLive(relay!, ['rapid'], 20_000);
    // Busy loops on every core: gst-launch-1.0 then sometimes hangs after writing the picture.
    const hog = cpuHog(3);
    const failures: string[] = [];
    const pictures = new Set<string>();
    const times: number[] = [];
    try {
      for (let i = 0; i < 120; i++) {
        const started = performance.now();
        const shot = await snapshot(relay!, 'rapid');
        times.push(performance.now() - started);
        if (shot.status !== 200) failures.push(`${i}: ${shot.status} ${shot.body.toString()}`);
        else pictures.add(shot.body.toString('base64'));
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    } finally {
      hog.stop();
    }
    times.sort((a, b) => a - b);
    console.log(`      ${pictures.size} different pictures in 120 requests; time to answer median ${times[60].toFixed(0)} ms, slowest ${times[119].toFixed(0)} ms`);
    expect(failures).to.deep.equal([]);
    expect(pictures.size, 'different pictures').to.be.at.least(60);
  });

  it('a stream that goes live later gets its pictures then, at its own size (VP9 from ffmpeg)', async function () {
    producers.push(ffmpegTcpProducer(laterPort, { pattern: 'testsrc2', size: '400x224', codec: 'vp9' }));
    await waitStreamsLive(relay!, ['later'], 20_000, producers);
    await expectJpeg(await snapshot(relay!, 'later'), 400, 224, 'later');
    expect((await snapshot(relay!, 'empty')).status).to.equal(503);
  });
});
