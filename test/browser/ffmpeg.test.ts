import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Browser, BrowserContext } from 'playwright-core';
import { launchBrowser, playerSnapshot, sampleVideo, sleep, watchErrors } from '../helpers/browser.js';
import { freePort, startRelay, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';

/**
 * ffmpeg as an external live producer: VP9 + Opus in WebM, pushed to the relay's TCP ingest.
 * `-cluster_time_limit 100` makes ffmpeg write a cluster every 100 ms; its default (clusters of
 * about 32 KiB, here about half a second each) still plays, but arrives in bursts.
 */
function startFfmpeg(port: number): { process: ChildProcess; log: () => string; stop: () => Promise<void> } {
  const args = [
    '-hide_banner', '-loglevel', 'error', '-nostdin',
    '-re', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=30',
    '-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libvpx-vp9', '-deadline', 'realtime', '-cpu-used', '8', '-g', '30', '-b:v', '500k',
    '-c:a', 'libopus',
    '-f', 'webm', '-live', '1', '-cluster_time_limit', '100',
    `tcp://127.0.0.1:${port}`,
  ];
  const child = spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => (log += text));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    process: child,
    log: () => log,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

describe('player page in Chromium with ffmpeg as the producer (VP9 + Opus)', function () {
  this.timeout(90_000);
  let relay: RunningRelay | null = null;
  let ffmpeg: ReturnType<typeof startFfmpeg> | null = null;
  let browser: Browser | null = null;
  let context: BrowserContext | null = null;

  before(async function () {
    const ingestPort = await freePort();
    relay = await startRelay(['--ingest', `tcp://127.0.0.1:${ingestPort}`]);
    await waitFor('the ingest to listen', () => /listening for a producer/.test(relay!.log()), 5000);
    ffmpeg = startFfmpeg(ingestPort);
    await waitLive(relay, 15_000).catch((error: Error) => {
      throw new Error(`${error.message}\nffmpeg:\n${ffmpeg!.log()}\nrelay:\n${relay!.log()}`);
    });
    browser = await launchBrowser();
  });

  after(async function () {
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await ffmpeg?.stop();
    await relay?.stop();
  });

  it('plays: VP9 is described, currentTime advances, frames are decoded', async function () {
    context = await browser!.newContext({ viewport: { width: 800, height: 500 } });
    const page = await context.newPage();
    const errors = watchErrors(page);
    await page.goto(`${relay!.url}/`);
    await page.waitForFunction(() => (window as unknown as { player?: { state: string } }).player?.state === 'playing', null, {
      timeout: 15_000,
    });
    const before = await sampleVideo(page);
    await sleep(4000);
    const after = await sampleVideo(page);
    const s = await playerSnapshot(page);
    const detail = JSON.stringify({ before, after, s, errors });
    expect(s.mimeType, detail).to.equal('video/webm; codecs="vp9,opus"');
    expect(s.codecs, detail).to.match(/^vp9/);
    expect(after.error, detail).to.equal(null);
    expect(after.videoWidth, detail).to.equal(320);
    expect(after.videoHeight, detail).to.equal(240);
    expect(after.currentTime - before.currentTime, detail).to.be.at.least(2.5);
    expect(after.decodedFrames - before.decodedFrames, detail).to.be.at.least(40);
    expect(s.state, detail).to.equal('playing');
    expect(s.mediaErrors, detail).to.equal(0);
    console.log(`      ffmpeg VP9: first frame ${s.firstFrameMs} ms after navigation, lag ${(s.lag * 1000).toFixed(0)} ms, stalls ${s.stalls}`);
  });
});
