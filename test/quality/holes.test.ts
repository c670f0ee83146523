import net from 'node:net';
import { spawn } from 'node:child_process';
import { expect } from 'chai';
import { chromium, type Browser } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS } from '../helpers/browser.js';
import { ENGINES, launchEngine, type Engine, type EnginePage } from '../helpers/engines.js';
import { installQuality, readQuality, type PlaybackQuality } from '../helpers/quality.js';
import { cpuHog, killTracked, startTcpRelay, track } from '../helpers/faults.js';
import { sleep, startRelay, waitLive, type RunningRelay } from '../helpers/relay.js';
import { report, retryOnceIfHung, snapshot } from '../engines/common.js';

/**
 * The stream carries no holes, whatever the producer: a starved encoder that drops frames,
 * a variable-frame-rate producer, a browser's MediaRecorder. Each engine watches the
 * player page at the same time; none may see a hole in `buffered` or stall after the start.
 *
 * The start is the player's start window (3 s, see latency-controller.js): it places
 * itself behind live then, and on this loaded machine a start stalled once in about half
 * the runs, 1.1-2.3 s after the first frame, in one engine or another (the decoder
 * catching up after the start's seek, a producer's first burst late), where the first
 * second this test allowed before did not cover it. Stalls in the start count against the
 * time-stalled bound below; none may come after it.
 */
const START_WINDOW_MS = 3000;
describe('no holes, no stalls: every engine at once, on a loaded machine and with irregular producers', function () {
  this.timeout(300_000);
  const engines: Engine[] = [];

  before(async function () {
    for (const name of ENGINES) engines.push(await launchEngine(name));
  });

  after(async function () {
    await Promise.all(engines.map((e) => e.close()));
    await killTracked();
  });

  /**
   * Opens the player page in every engine, watches for `seconds`, returns each engine's
   * figures; once more, with fresh pages, if a browser hangs (a WebKitGTK bug: see EngineHungError).
   */
  function watchAll(relay: RunningRelay, seconds: number, what: string): Promise<{ engine: Engine; q: PlaybackQuality }[]> {
    return retryOnceIfHung(what, () => watchOnce(relay, seconds, what));
  }

  async function watchOnce(relay: RunningRelay, seconds: number, what: string): Promise<{ engine: Engine; q: PlaybackQuality }[]> {
    const pages: EnginePage[] = [];
    try {
      for (const engine of engines) {
        const page = await engine.newPage();
        pages.push(page);
        await page.goto(`${relay.url}/`);
        await installQuality(page, START_WINDOW_MS);
      }
      await sleep(seconds * 1000);
      const results = [];
      for (const [i, page] of pages.entries()) {
        const q = await readQuality(page);
        const s = await snapshot(page);
        report(engines[i].name, engines[i].version, what, q, { target: Number(s.targetLatency.toFixed(2)), lead: Number(s.lead.toFixed(2)), mode: s.latencyMode, catchUpSeeks: s.catchUpSeeks, jumpsToLive: s.jumps, stalls: s.stalls, skips: s.skips, pausesUndone: s.unexpectedPauses, refusedPlays: s.refusedPlays });
        results.push({ engine: engines[i], q });
      }
      return results;
    } finally {
      for (const page of pages) await page.close().catch(() => {});
    }
  }

  function expectNoHoles(results: { engine: Engine; q: PlaybackQuality }[], seconds: number): void {
    for (const { engine, q } of results) {
      const detail = `${engine.name}: ${JSON.stringify(q)}`;
      expect(q.error, detail).to.equal(null);
      expect(q.firstFrameMs, detail).to.not.equal(null);
      expect(q.holeSamples, `${detail}: samples with a hole in buffered`).to.equal(0);
      expect(q.stallsAfterSettle, `${detail}: stalls after the start`).to.equal(0);
      // The start may stall: the player starts behind live by what the relay measured of the
      // stream's pacing, before it has seen how far apart its own appends come.
      expect(q.stalledMs, `${detail}: time stalled`).to.be.at.most(seconds * 100);
      expect(q.playedS, detail).to.be.at.least(seconds * 0.8);
    }
  }

  it('default encoder with a CPU hog on every core, 60 s', async function () {
    const hog = cpuHog(2);
    let relay: RunningRelay | null = null;
    try {
      relay = await startRelay();
      await waitLive(relay, 20_000);
      expectNoHoles(await watchAll(relay, 60, 'default encoder + CPU hog, 60 s'), 60);
    } finally {
      hog.stop();
      await relay?.stop();
    }
  });

  it('a variable-frame-rate producer (frames at irregular gaps of up to 0.5 s), 30 s', async function () {
    const { relay, ingestPort } = await startTcpRelay();
    try {
      // A live ffmpeg source of which a random quarter of the frames is kept, and at least every 15th.
      track(
        spawn('ffmpeg', [
          '-hide_banner', '-loglevel', 'error', '-nostdin',
          '-re', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=30',
          '-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
          '-vf', "select='lt(random(0),0.25)+not(mod(n,15))'", '-fps_mode', 'vfr',
          '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-b:v', '300k', '-g', '30',
          '-c:a', 'libopus', '-b:a', '48k',
          '-f', 'webm', '-live', '1', `tcp://127.0.0.1:${ingestPort}`,
        ], { stdio: 'ignore' }),
      );
      await waitLive(relay, 20_000);
      expectNoHoles(await watchAll(relay, 30, 'variable frame rate producer, 30 s'), 30);
    } finally {
      await killTracked();
      await relay.stop();
    }
  });

  it("Chromium's MediaRecorder recording its fake camera as the producer, 30 s", async function () {
    const { relay, ingestPort } = await startTcpRelay();
    let recorder: Browser | null = null;
    const socket = net.connect(ingestPort, '127.0.0.1');
    try {
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      recorder = await chromium.launch({
        executablePath: CHROMIUM,
        args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'],
        headless: true,
      });
      const page = await recorder.newPage();
      await page.exposeFunction('sendChunk', (base64: string) => void socket.write(Buffer.from(base64, 'base64')));
      await page.goto(`${relay.url}/healthz`);
      await page.evaluate(async () => {
        const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
        const media = new MediaRecorder(stream, { mimeType: 'video/webm;codecs=vp8,opus', videoBitsPerSecond: 500_000 });
        let chain = Promise.resolve();
        media.ondataavailable = (event) => {
          chain = chain.then(async () => {
            const bytes = new Uint8Array(await event.data.arrayBuffer());
            let text = '';
            for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            await (window as unknown as { sendChunk(b: string): Promise<void> }).sendChunk(btoa(text));
          });
        };
        media.start(100);
      });
      await waitLive(relay, 20_000);
      expectNoHoles(await watchAll(relay, 30, 'Chromium MediaRecorder producer, 30 s'), 30);
    } finally {
      socket.destroy();
      await recorder?.close().catch(() => {});
      await relay.stop();
    }
  });
});
