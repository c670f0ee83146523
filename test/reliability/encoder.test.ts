/**
 * Encoder faults: the spawned gst-launch-1.0 dies, is missing, or cannot build its
 * pipeline; the relay shuts down (or is killed) around it. Real processes; the
 * assertions are what an operator (log, process table) and a viewer observe.
 */
import { expect } from 'chai';
import type { Browser } from 'playwright-core';
import { ffmpegErrors, startRelay, trimToCompleteBlocks, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import {
  alive,
  encoderPort,
  gstChildren,
  HttpViewer,
  killTracked,
  logLines,
  processesWithArg,
  sleep,
  spawnRelay,
  streamShape,
  waitStats,
  type RawRelay,
} from '../helpers/faults.js';

const SMALL = ['--width', '320', '--height', '240', '--video-bitrate', '400', '--audio-bitrate', '48'];

/** Watches the relay's gst-launch-1.0 children every 25 ms: the most seen at once, and every pid. */
function watchEncoders(relayPid: number) {
  const seen = new Set<number>();
  let most = 0;
  const timer = setInterval(() => {
    const pids = gstChildren(relayPid);
    for (const pid of pids) seen.add(pid);
    most = Math.max(most, pids.length);
  }, 25);
  return {
    seen,
    get most() {
      return most;
    },
    stop: () => clearInterval(timer),
  };
}

async function onlyEncoder(relay: RunningRelay): Promise<number> {
  let pids: number[] = [];
  await waitFor('exactly one gst-launch-1.0 child', () => (pids = gstChildren(relay.process.pid!)).length === 1, 10_000);
  return pids[0];
}

/** Kills the running encoder with SIGKILL; resolves with its pid, its successor's, and how long that took to appear. */
async function killEncoder(relay: RunningRelay): Promise<{ killed: number; next: number; restartMs: number }> {
  const killed = await onlyEncoder(relay);
  const stats = await waitStats(relay.url, 'the encoder to be delivering', (s) => s.live && s.encoder?.pid === killed);
  const producersBefore = stats.ingest.producers as number;
  process.kill(killed, 'SIGKILL');
  const t0 = Date.now();
  let next = 0;
  await waitFor(
    'a new gst-launch-1.0',
    () => {
      const pids = gstChildren(relay.process.pid!).filter((p) => p !== killed);
      next = pids[0] ?? 0;
      return next !== 0;
    },
    5000,
  );
  const restartMs = Date.now() - t0;
  // Let the new one deliver before the next kill (a restart is immediate only after a delivery).
  await waitStats(relay.url, 'the new encoder to deliver', (s) => s.live && s.ingest.producers > producersBefore && s.normalizer.blocks > 0, 15_000);
  return { killed, next, restartMs };
}

describe('reliability: encoder faults', function () {
  this.timeout(90_000);
  let relay: RunningRelay | null = null;
  let raw: RawRelay | null = null;
  let browser: Browser | null = null;

  afterEach(async () => {
    await browser?.close().catch(() => {});
    browser = null;
    if (relay) {
      const pid = relay.process.pid!;
      const children = gstChildren(pid);
      await relay.stop('SIGKILL');
      for (const child of children) if (alive(child)) process.kill(child, 'SIGKILL');
    }
    relay = null;
    if (raw && raw.process.exitCode === null && raw.process.signalCode === null) raw.process.kill('SIGKILL');
    raw = null;
    await killTracked();
  });

  it('restarts gst-launch-1.0 killed with SIGKILL five times: a new one within 2 s, the reason and its stderr logged, never two at once', async () => {
    relay = await startRelay(SMALL, { GST_DEBUG: 'GST_INIT:4', GST_DEBUG_NO_COLOR: '1' });
    await waitLive(relay, 20_000);
    const watch = watchEncoders(relay.process.pid!);
    const kills: { killed: number; next: number; restartMs: number }[] = [];
    try {
      for (let i = 0; i < 5; i++) kills.push(await killEncoder(relay));
      await sleep(500);
    } finally {
      watch.stop();
    }
    console.log(`      restart times (kill → new pid): ${kills.map((k) => k.restartMs).join(', ')} ms`);
    for (const k of kills) expect(k.restartMs, `restart after killing ${k.killed}`).to.be.below(2000);
    expect(watch.most, 'gst-launch-1.0 children at once').to.equal(1);
    expect(gstChildren(relay.process.pid!)).to.have.length(1);
    for (const k of kills) expect(alive(k.killed), `killed encoder ${k.killed} still alive`).to.equal(false);

    const log = relay.log();
    const died = logLines(log, /\[encoder\] live: gst-launch-1\.0 killed by SIGKILL/);
    expect(died, log).to.have.length(5);
    kills.forEach((k, i) => {
      // The tail of that process' own stderr (GST_DEBUG lines carry its pid) is in the line.
      expect(died[i]).to.match(/last stderr: .*initialized GStreamer successfully/);
      expect(died[i]).to.include(` ${k.killed} `);
    });
    expect(logLines(log, /\[encoder\] live: started gst-launch-1\.0/)).to.have.length(6);
  });

  it('keeps an HTTP viewer connected across five encoder kills with one header, clean decode and monotonic timestamps', async () => {
    relay = await startRelay(SMALL);
    await waitLive(relay, 20_000);
    const viewer = new HttpViewer(`${relay.url}/live.webm`);
    await waitFor('the viewer to get media', () => viewer.bytes > 50_000, 15_000);
    for (let i = 0; i < 5; i++) {
      await killEncoder(relay);
      await sleep(700);
    }
    await sleep(1500);
    expect(viewer.outcome, 'the viewer stayed connected').to.equal('open');
    viewer.close();
    const stats = await waitStats(relay.url, 'stats', () => true);
    expect(stats.normalizer.seamlessRestarts).to.equal(5);

    const body = trimToCompleteBlocks(viewer.body);
    const shape = streamShape(body);
    expect(shape.headers, 'EBML headers in the capture').to.equal(1);
    expect(shape.errors).to.deep.equal([]);
    expect(shape.backwards, 'timestamps going backwards').to.deep.equal([]);
    expect(shape.times.size).to.equal(2);
    const video = shape.times.get(1) ?? [];
    // Timestamps carry on across restarts: no reset to zero, no huge jump.
    const span = (video[video.length - 1] - video[0]) / 1000;
    expect(span).to.be.above(5).and.below(120);
    expect(ffmpegErrors(body)).to.deep.equal([]);
  });

  it('a Chromium player keeps advancing currentTime across an encoder kill', async () => {
    const { launchBrowser } = await import('../helpers/browser.js');
    relay = await startRelay(SMALL);
    await waitLive(relay, 20_000);
    browser = await launchBrowser();
    const page = await browser.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(`${relay.url}/`);
    const sample = () =>
      page.evaluate(() => {
        const video = document.querySelector('video') as HTMLVideoElement | null;
        const player = (window as unknown as { player?: { snapshot(): { mediaErrors: number; state: string } } }).player;
        const snap = player?.snapshot();
        return {
          currentTime: video?.currentTime ?? 0,
          error: video?.error ? `${video.error.code} ${video.error.message}` : null,
          mediaErrors: snap?.mediaErrors ?? 0,
          state: snap?.state ?? 'n/a',
        };
      });
    await waitFor('playback to start', async () => (await sample()).currentTime > 1.5, 30_000);
    const before = await sample();
    const { killed } = await killEncoder(relay);
    const trace: number[] = [];
    const t0 = Date.now();
    while (Date.now() - t0 < 8000) {
      trace.push((await sample()).currentTime);
      await sleep(500);
    }
    const after = await sample();
    console.log(`      killed ${killed}; currentTime ${before.currentTime.toFixed(2)} → ${after.currentTime.toFixed(2)} over ~8 s; trace ${trace.map((t) => t.toFixed(1)).join(' ')}`);
    expect(after.error, 'video element error').to.equal(null);
    expect(after.mediaErrors).to.equal(0);
    expect(pageErrors).to.deep.equal([]);
    // Real time went on by ~8 s plus the kill; the picture must have gone on by most of it.
    expect(after.currentTime - before.currentTime).to.be.above(4);
    // And it moves at the end, not frozen after a burst.
    expect(trace[trace.length - 1]).to.be.above(trace[Math.floor(trace.length / 2)]);
    // The picture may hold while the new encoder starts (~0.3 s restart plus its first keyframe), not for long.
    let frozen = 0;
    let longest = 0;
    for (let i = 1; i < trace.length; i++) {
      frozen = trace[i] - trace[i - 1] < 0.05 ? frozen + 500 : 0;
      longest = Math.max(longest, frozen);
    }
    console.log(`      longest freeze ~${longest} ms`);
    expect(longest, 'ms without currentTime advancing').to.be.at.most(4000);
  });

  it('exits non-zero at once, with one clear line, when gst-launch-1.0 is not installed', async () => {
    raw = spawnRelay([...SMALL, '--gst-launch', '/nonexistent/gst-launch-1.0']);
    const exit = await Promise.race([raw.exited, sleep(8000).then(() => null)]);
    const log = raw.log();
    expect(exit, `still running after 8 s:\n${log}`).to.not.equal(null);
    expect(exit!.code, log).to.not.equal(0);
    expect(exit!.atMs).to.be.below(5000);
    const errors = logLines(log, / error /);
    expect(errors, log).to.have.length(1);
    expect(errors[0]).to.match(/\/nonexistent\/gst-launch-1\.0 not found: install GStreamer.*gstreamer1\.0-tools/);
    expect(logLines(log, /started /).length).to.be.at.most(1);
  });

  it('exits non-zero at once, naming the element, when the video source element does not exist', async () => {
    raw = spawnRelay([...SMALL, '--video-source', 'nosuchsrc']);
    const exit = await Promise.race([raw.exited, sleep(10_000).then(() => null)]);
    const log = raw.log();
    expect(exit, `still running after 10 s:\n${log}`).to.not.equal(null);
    expect(exit!.code, log).to.not.equal(0);
    expect(exit!.atMs).to.be.below(8000);
    const errors = logLines(log, / error /);
    expect(errors, log).to.have.length(1);
    expect(errors[0]).to.include('no element "nosuchsrc"');
    expect(logLines(log, /\[encoder\] live: started /).length, 'restart loop').to.be.at.most(1);
    expect(logLines(log, /restarting in/), 'restart loop').to.have.length(0);
  });

  it('SIGTERM: exits 0 within 2 s and leaves no gst-launch-1.0 behind', async () => {
    relay = await startRelay(SMALL);
    await waitLive(relay, 20_000);
    const encoders = gstChildren(relay.process.pid!);
    expect(encoders).to.have.length(1);
    const t0 = Date.now();
    const code = await relay.stop('SIGTERM');
    const ms = Date.now() - t0;
    console.log(`      SIGTERM → exit ${code} in ${ms} ms`);
    expect(code).to.equal(0);
    expect(ms).to.be.below(2000);
    expect(alive(encoders[0]), `gst-launch-1.0 ${encoders[0]} left behind`).to.equal(false);
    const port = encoderPort(relay.log());
    expect(port, 'the encoder line names its port').to.be.a('number');
    expect(processesWithArg('gst-launch-1.0', `port=${port}`)).to.deep.equal([]);
  });

  it('SIGTERM while still starting (100-300 ms after spawn, and at each start-up log line): exits and leaves no gst-launch-1.0 behind', async () => {
    const cases: (number | RegExp)[] = [100, 150, 200, 250, 300, /serving http/, /\[ingest\] live: encoder: /, /started gst-launch-1\.0/];
    const outcomes: string[] = [];
    for (const when of cases) {
      raw = spawnRelay(SMALL);
      const current = raw;
      const relayPid = current.process.pid!;
      const seen = new Set<number>();
      const watch = setInterval(() => gstChildren(relayPid).forEach((p) => seen.add(p)), 10);
      if (typeof when === 'number') {
        await sleep(when);
        current.process.kill('SIGTERM');
      } else {
        // Sent from the stderr handler, the moment the line arrives.
        await new Promise<void>((resolve) => {
          const onData = () => {
            if (!when.test(current.log())) return;
            current.process.stderr!.off('data', onData);
            current.process.kill('SIGTERM');
            resolve();
          };
          current.process.stderr!.on('data', onData);
          void current.exited.then(() => resolve());
        });
      }
      const exit = await Promise.race([current.exited, sleep(5000).then(() => null)]);
      clearInterval(watch);
      const log = current.log();
      expect(exit, `${when}: still running 5 s after SIGTERM:\n${log}`).to.not.equal(null);
      outcomes.push(`${when}: ${exit!.signal ?? `exit ${exit!.code}`} at ${exit!.atMs} ms`);
      // Before node has installed its handler, SIGTERM's default action ends it; after, a clean exit 0.
      if (exit!.signal === null) expect(exit!.code, `${when}:\n${log}`).to.equal(0);
      else expect(exit!.signal).to.equal('SIGTERM');
      // Every encoder it ever spawned: seen as its children, or found by its ingest port (an orphan).
      const port = encoderPort(log);
      const left = [...seen].filter(alive);
      if (port !== null) left.push(...processesWithArg('gst-launch-1.0', `port=${port}`));
      expect(left, `${when}: gst-launch-1.0 left behind (seen ${[...seen].join(',') || 'none'}, port ${port}):\n${log}`).to.deep.equal([]);
      raw = null;
    }
    console.log(`      ${outcomes.join('; ')}`);
  });

  it('SIGKILL of the relay: the orphaned gst-launch-1.0 exits on its own within a few seconds', async () => {
    relay = await startRelay(SMALL);
    await waitLive(relay, 20_000);
    const [encoder] = gstChildren(relay.process.pid!);
    expect(encoder).to.be.a('number');
    await relay.stop('SIGKILL');
    const t0 = Date.now();
    await waitFor(`orphaned gst-launch-1.0 ${encoder} to exit`, () => !alive(encoder), 8000);
    console.log(`      orphan ${encoder} exited ${Date.now() - t0} ms after the relay was killed`);
  });
});
