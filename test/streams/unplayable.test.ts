/**
 * Producers whose streams browsers cannot play, from real ffmpeg: H.264 in Matroska is
 * refused when its header arrives (TCP: one log line naming the track, its codec and
 * what to use; PUT: 415 with the same text), and a WebVTT track beside VP8 is left out
 * of what viewers get, with a log line.
 */
import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { WsViewer, killTracked, logLines } from '../helpers/faults.js';
import { ffprobeStreams } from '../helpers/media.js';
import { capture, freePort, trimToCompleteBlocks, waitFor } from '../helpers/relay.js';
import {
  putFromFfmpeg,
  spawnFfmpeg,
  startConfigRelay,
  streamList,
  streamStats,
  tempDir,
  waitListening,
  waitStreamsLive,
  type ConfigRelay,
} from '../helpers/streams.js';
import { decodeErrors, parseStream, shutdown } from '../helpers/viewers.js';

const TOKEN = 'guest-token-0123456789abcdef';

/** An H.264 camera as people relay it: libx264 (and Opus) into Matroska, live. */
const H264_MATROSKA = [
  '-hide_banner', '-loglevel', 'error', '-nostdin',
  '-re', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=15',
  '-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
  '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-pix_fmt', 'yuv420p', '-g', '15',
  '-c:a', 'libopus', '-b:a', '32k',
  '-f', 'matroska', '-live', '1',
];

/** What the relay says about it, in the log and to a PUT. */
const H264_REFUSAL = 'track 1 is video in V_MPEG4/ISO/AVC, which browsers cannot play from WebM: use VP8, VP9 or AV1';

/** A WebVTT file with a cue every second for a minute. */
function webvttFile(): string {
  const cues = Array.from({ length: 60 }, (_, i) => {
    const s = String(i).padStart(2, '0');
    return `00:${s}.000 --> 00:${s}.900\ncaption ${i}\n`;
  });
  const file = path.join(tempDir(), 'captions.vtt');
  writeFileSync(file, `WEBVTT\n\n${cues.join('\n')}`);
  return file;
}

describe('streams: producers the browsers cannot play', function () {
  this.timeout(90_000);
  let relay: ConfigRelay | null = null;
  let cameraPort = 0;
  let subsPort = 0;

  before(async function () {
    [cameraPort, subsPort] = [await freePort(), await freePort()];
    relay = await startConfigRelay(
      [
        'streams:',
        '  camera:',
        `    listen: tcp://127.0.0.1:${cameraPort}`,
        '  guest:',
        `    publish: { token: ${TOKEN} }`,
        '  subs:',
        `    listen: tcp://127.0.0.1:${subsPort}`,
        '',
      ].join('\n'),
    );
    await waitListening(relay, cameraPort);
    await waitListening(relay, subsPort);
  });

  after(async function () {
    await killTracked();
    await shutdown(relay);
  });

  it('libx264 into Matroska over TCP is refused with one log line naming the track, its codec and what to use; nothing is announced', async function () {
    const ffmpeg = spawnFfmpeg([...H264_MATROSKA, `tcp://127.0.0.1:${cameraPort}`]);
    await waitFor('the relay to refuse the H.264 producer', () => relay!.log().includes('V_MPEG4'), 20_000);
    // The relay hangs up: ffmpeg cannot write on and exits.
    const exit = await Promise.race([
      new Promise<number | null>((resolve) => ffmpeg.process.once('exit', (code) => resolve(code))),
      new Promise<'running'>((resolve) => setTimeout(() => resolve('running'), 10_000)),
    ]);
    expect(exit, `ffmpeg: ${ffmpeg.stderr()}`).to.not.equal('running');
    expect(exit).to.not.equal(0);

    const lines = logLines(relay!.log(), /V_MPEG4/);
    expect(lines, relay!.log()).to.have.length(1);
    expect(lines[0]).to.match(/ warn  \[ingest\] camera: tcp 127\.0\.0\.1:\d+: rejected: /);
    expect(lines[0]).to.include(`${H264_REFUSAL} (ffmpeg: -c:v libvpx-vp9 -deadline realtime; GStreamer: vp8enc or vp9enc)`);

    const stats = await streamStats(relay!, 'camera');
    expect(stats.ingest.rejected).to.equal(1);
    const camera = (await streamList(relay!)).find((s) => s.name === 'camera')!;
    expect(camera.live).to.equal(false);
    expect(camera.mimeType, 'never announced to viewers').to.equal(null);
    expect(camera.tracks).to.deep.equal([]);
    expect((await fetch(`${relay!.url}/healthz`)).status, 'no stream is live').to.equal(503);
  });

  it('the same over PUT /guest.webm is answered 415 with the same text', async function () {
    const answer = await putFromFfmpeg(`${relay!.url}/guest.webm`, TOKEN, [...H264_MATROSKA, 'pipe:1']);
    expect(answer.status, answer.body).to.equal(415);
    expect(answer.body).to.include(H264_REFUSAL);
    expect(answer.body).to.match(/^refused: /);
    expect(logLines(relay!.log(), /guest: http .*rejected: .*V_MPEG4/)).to.have.length(1);
    const guest = await streamStats(relay!, 'guest');
    expect([guest.live, guest.mimeType, guest.ingest.rejected]).to.deep.equal([false, null, 1]);
  });

  it('a WebVTT track beside VP8 and Opus is accepted; viewers get no subtitle track, and the log says it was left out', async function () {
    const producer = spawnFfmpeg([
      '-hide_banner', '-loglevel', 'error', '-nostdin',
      '-re', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=15',
      '-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-i', webvttFile(),
      '-map', '0:v', '-map', '2:s', '-map', '1:a',
      '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-b:v', '300k', '-g', '15',
      '-c:s', 'webvtt', '-c:a', 'libopus', '-b:a', '32k',
      '-f', 'webm', '-live', '1', '-cluster_time_limit', '100', `tcp://127.0.0.1:${subsPort}`,
    ]);
    await waitStreamsLive(relay!, ['subs'], 20_000, [producer]);

    // What the producer sent: video, then the subtitles as track 2, then audio.
    const left = logLines(relay!.log(), /subs: tcp .*: track \d+ \(D_WEBVTT\/SUBTITLES\) left out/);
    expect(left, relay!.log()).to.have.length(1);
    expect(left[0]).to.match(/track 2 \(D_WEBVTT\/SUBTITLES\) left out: viewers get audio and video only$/);

    const ws = new WsViewer(`${relay!.url.replace('http:', 'ws:')}/subs`);
    const [http] = await Promise.all([capture(`${relay!.url}/subs.webm`, 3000), ws.opened]);
    ws.close();
    const parsed = parseStream(http.body);
    expect(parsed.errors).to.deep.equal([]);
    const tracks = parsed.info!.tracks;
    expect(tracks.map((t) => [t.number, t.kind, t.codecId])).to.deep.equal([[1, 'video', 'V_VP8'], [3, 'audio', 'A_OPUS']]);
    expect(parsed.info!.mimeType).to.equal('video/webm; codecs="vp8,opus"');
    const blocks = parsed.clusters.flatMap((c) => c.blocks);
    // 45 frames and 150 audio packets in 3 s; an overloaded machine makes ffmpeg send fewer.
    expect(blocks.length).to.be.at.least(10);
    expect(blocks.filter((b) => b.track !== 1 && b.track !== 3), 'no block of the subtitle track').to.deep.equal([]);

    // ffprobe, reading the capture on its own, finds no subtitle stream either, and it decodes.
    const file = path.join(tempDir(), 'subs.webm');
    writeFileSync(file, trimToCompleteBlocks(http.body));
    expect(ffprobeStreams(file).map((s) => s.codecType)).to.deep.equal(['video', 'audio']);
    expect(await decodeErrors(trimToCompleteBlocks(http.body))).to.deep.equal([]);

    // The player's description of the stream has no subtitle track.
    const description = ws.messages.map((m) => m.text).find((t) => t?.includes('"type":"stream"'));
    const message = JSON.parse(description!) as { tracks: { kind: string; codec: string }[] };
    expect(message.tracks.map((t) => [t.kind, t.codec])).to.deep.equal([['video', 'vp8'], ['audio', 'opus']]);
  });
});
