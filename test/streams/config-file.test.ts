/**
 * The config file as a user meets it, through the real process: each mistake stops the
 * relay at start-up with exit code 2 and one line naming the file, the line and the key
 * path; and the shipped webm-relay.example.yml starts, with its webcam and screen swapped
 * for test sources.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HttpViewer, gstChildren, killTracked } from '../helpers/faults.js';
import { CLI, ROOT, capture, freePort, getJson, startRelay, waitFor, type RunningRelay } from '../helpers/relay.js';
import { streamList, waitListening, waitStreamsLive, writeConfig } from '../helpers/streams.js';
import { mapLimit, shutdown } from '../helpers/viewers.js';

/** Runs the relay to its exit (asynchronously, so that the cases run side by side). */
function runRelay(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const startedAt = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WEBM_RELAY_LOG: 'info' } });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
  child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  // Generous: starting node on a loaded 2-core machine has taken seconds.
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) =>
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - startedAt });
    }),
  );
}

const GOOD = 'streams:\n  cam:\n    encoder: {}\n';

/** [what, the file, its line, the key path, the rest of the message]. */
const MISTAKES: [string, string, number, string, RegExp][] = [
  ['an unknown key at the top', 'max-viewer: 10\n' + GOOD, 1, 'max-viewer', /: unknown key \(known here: port, host, .*streams\)$/],
  ['an unknown key in a stream', 'streams:\n  cam:\n    encoder: {}\n    max_viewers: 3\n', 4, 'streams.cam.max_viewers', /: unknown key \(known here: .*max-viewers/],
  ['an unknown key in an encoder', 'streams:\n  cam:\n    encoder:\n      width: 320\n      hieght: 240\n', 5, 'streams.cam.encoder.hieght', /: unknown key \(known here: video-source, .*height/],
  ['a bad value', 'streams:\n  cam:\n    encoder:\n      video-codec: h264\n', 4, 'streams.cam.encoder.video-codec', / must be one of vp8, vp9, got "h264"$/],
  ['a bad limit', 'streams:\n  cam:\n    encoder: {}\n    max-viewers: -1\n', 4, 'streams.cam.max-viewers', / must be a whole number from 1 to 100000, got "-1"$/],
  ['a bad value at the top', 'max-viewers: many\n' + GOOD, 1, 'max-viewers', / must be a whole number from 1 to 1000000, got "many"$/],
  ['a duplicate stream name', GOOD + '  stage:\n    listen: tcp://127.0.0.1:9002\n  cam:\n    encoder: {}\n', 6, 'streams.cam', /: a second stream named "cam" \(the first is on line 2\)$/],
  ...['api', 'metrics', 'healthz', 'js'].map((name): [string, string, number, string, RegExp] => [
    `the reserved name "${name}"`,
    `${GOOD}  ${name}:\n    listen: tcp://127.0.0.1:9002\n`,
    4,
    `streams.${name}`,
    new RegExp(`: stream name "${name}" is reserved for the relay's own paths$`),
  ]),
  ['a stream with no producer', GOOD + '  stage:\n    max-viewers: 5\n', 4, 'streams.stage', / needs exactly one producer, one of encoder, listen, publish, pull$/],
  ['a stream with two producers', GOOD + '  stage:\n    listen: tcp://127.0.0.1:9002\n    publish: { token: 0123456789abcdef0123 }\n', 4, 'streams.stage', / needs exactly one producer, .*\(has listen, publish\)$/],
];

describe('streams: the config file through the real process', function () {
  // Thirteen starts of node, four at a time: seconds each on a loaded machine.
  this.timeout(180_000);
  let relay: RunningRelay | null = null;
  /** Where the example's recording stream writes: a folder of the test's own, not the working directory. */
  const recordings = mkdtempSync(path.join(os.tmpdir(), 'webm-relay-example-recordings-'));

  after(async function () {
    await killTracked();
    await shutdown(relay);
    rmSync(recordings, { recursive: true, force: true });
  });

  it('every mistake exits 2 with one line naming the file, the line and the key path, and starts nothing', async function () {
    const files = MISTAKES.map(([, text]) => writeConfig(text));
    const results = await mapLimit(files, 4, (file) => runRelay(['--config', file, '--port', '0', '--host', '127.0.0.1']));
    MISTAKES.forEach(([what, , line, keyPath, rest], i) => {
      const { code, stdout, stderr } = results[i];
      const detail = `${what}: ${stderr}`;
      expect(code, detail).to.equal(2);
      expect(stdout, detail).to.equal('');
      const lines = stderr.split('\n').filter(Boolean);
      expect(lines, `${detail}: one line, no stack trace, no "serving"`).to.have.length(1);
      const prefix = `webm-relay: ${files[i]}:${line}: ${keyPath}`;
      expect(lines[0].startsWith(prefix), `${detail}\nexpected it to start with: ${prefix}`).to.equal(true);
      expect(lines[0].slice(prefix.length), detail).to.match(rest);
    });
    console.log(`      ${MISTAKES.length} mistakes, each refused in ${Math.min(...results.map((r) => r.ms))}-${Math.max(...results.map((r) => r.ms))} ms`);
  });

  it('a stream option given as a flag beside --config exits 2 and says where it belongs', async function () {
    const file = writeConfig(GOOD);
    const cases: [string[], string][] = [
      [['--width', '320'], '--width'],
      [['--join', 'next-keyframe', '--max-queue', '1M'], '--join, --max-queue'],
      [['--ingest', 'tcp://127.0.0.1:9002'], '--ingest'],
    ];
    const results = await Promise.all(cases.map(([flags]) => runRelay(['--config', file, ...flags])));
    cases.forEach(([, named], i) => {
      const { code, stderr } = results[i];
      expect(code, stderr).to.equal(2);
      expect(stderr.trim(), stderr).to.equal(`webm-relay: ${named}: with --config, set stream options in the file (under streams.NAME)`);
    });
  });

  it('webm-relay.example.yml starts (webcam and screen swapped for test sources): five streams, the encoders and the mirror live', async function () {
    const example = readFileSync(path.join(ROOT, 'webm-relay.example.yml'), 'utf8');
    const [port, stagePort] = [await freePort(), await freePort()];
    let text = example;
    /** Replaces one whole line, which must be there exactly once: a test of the example as shipped. */
    const swap = (from: RegExp, to: string) => {
      const found = text.match(new RegExp(from.source, 'gm')) ?? [];
      expect(found, `${from} in the example`).to.have.length(1);
      text = text.replace(new RegExp(from.source, 'm'), to);
    };
    swap(/^( *video-source:) v4l2src .*$/, '$1 videotestsrc is-live=true pattern=smpte horizontal-speed=4');
    swap(/^( *audio-source:) pulsesrc.*$/, '$1 audiotestsrc is-live=true wave=sine freq=440 volume=0.1');
    swap(/^( *video-source:) ximagesrc .*$/, '$1 videotestsrc is-live=true pattern=ball');
    // Sizes a shared test machine encodes in real time.
    swap(/^( *width:) 1280$/, '$1 320');
    swap(/^( *height:) 720$/, '$1 180');
    swap(/^( *width:) 1920$/, '$1 320');
    swap(/^( *height:) 1080$/, '$1 180');
    swap(/^( *listen:) tcp:\/\/127\.0\.0\.1:9002$/, `$1 tcp://127.0.0.1:${stagePort}`);
    // The mirror pulls this relay's own lobby.
    swap(/^( *pull:) http:\/\/.*\/lobby\.webm$/, `$1 http://127.0.0.1:${port}/lobby.webm`);
    swap(/^record-dir: recordings$/, `record-dir: ${recordings}`);
    const file = writeConfig(text, 'webm-relay.yml');

    // --port after the harness' --port 0: the last one wins, and over the file's 9001.
    // --max-viewers beside --config: the whole relay's limit, over the file's 2000.
    relay = await startRelay(['--config', file, '--port', String(port), '--max-viewers', '3']);
    expect(relay.port).to.equal(port);
    await waitListening(relay, stagePort);
    await waitStreamsLive(relay, ['lobby', 'screen', 'mirror'], 30_000);
    const list = await streamList(relay);
    expect(list.map((s) => s.name)).to.deep.equal(['lobby', 'screen', 'stage', 'guest', 'mirror']);
    const byName = Object.fromEntries(list.map((s) => [s.name, s]));
    expect(byName.lobby.mimeType).to.equal('video/webm; codecs="vp8,opus"');
    expect(byName.screen.mimeType).to.equal('video/webm; codecs="vp9"');
    expect(byName.screen.tracks[0]).to.include({ width: 320, height: 180 });
    expect(byName.mirror.tracks).to.deep.equal(byName.lobby.tracks);
    expect([byName.stage.live, byName.guest.live]).to.deep.equal([false, false]);
    expect(gstChildren(relay.process.pid!)).to.have.length(2);
    // The publish slot takes its token, and only it.
    // Three viewers in all: the mirror's pull of lobby, and two more.
    const watching = [new HttpViewer(`${relay.url}/screen.webm`), new HttpViewer(`${relay.url}/lobby.webm`)];
    await waitFor('three viewer connections', async () => (await getJson<{ connections: number }>(`${relay!.url}/api/stats`)).connections === 3);
    const full = await capture(`${relay.url}/stage.webm`, 1500);
    for (const viewer of watching) viewer.close();
    expect(full.status, 'a fourth viewer').to.equal(503);
    expect(watching.map((v) => v.status)).to.deep.equal([200, 200]);
    const wrong = await fetch(`${relay.url}/guest.webm`, { method: 'PUT', headers: { Authorization: 'Bearer not-the-token-at-all' }, body: 'x' });
    expect(wrong.status).to.equal(401);
  });
});
