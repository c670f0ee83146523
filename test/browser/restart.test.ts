import { expect } from 'chai';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { launchBrowser, playerSnapshot, sampleVideo, sleep } from '../helpers/browser.js';
import { freePort, startRelay, waitLive, type RunningRelay } from '../helpers/relay.js';

function waitState(page: Page, state: string, timeoutMs: number) {
  return page.waitForFunction((want) => (window as unknown as { player?: { state: string } }).player?.state === want, state, {
    timeout: timeoutMs,
    polling: 50,
  });
}

describe('player page in Chromium when the relay restarts', function () {
  this.timeout(90_000);
  let relay: RunningRelay | null = null;
  let browser: Browser | null = null;
  let context: BrowserContext | null = null;

  after(async function () {
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await relay?.stop();
  });

  it('reconnects on its own to the relay started again on the same port, and plays again', async function () {
    const port = await freePort();
    relay = await startRelay(['--port', String(port)]);
    expect(relay.port).to.equal(port);
    await waitLive(relay, 15_000);
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: { width: 800, height: 500 } });
    const page = await context.newPage();
    await page.goto(`${relay.url}/`);
    await waitState(page, 'playing', 15_000);
    const first = await playerSnapshot(page);
    expect(first.reconnects).to.equal(0);

    // The relay goes away (and its encoder with it) ...
    await relay.stop('SIGTERM');
    await waitState(page, 'reconnecting', 10_000);
    await sleep(1000);
    // ... and comes back on the same port: the page was not touched.
    const stoppedAt = Date.now();
    relay = await startRelay(['--port', String(port)]);
    await waitState(page, 'playing', 20_000);
    const backAfterMs = Date.now() - stoppedAt;

    const before = await sampleVideo(page);
    await sleep(3000);
    const after = await sampleVideo(page);
    const s = await playerSnapshot(page);
    const detail = JSON.stringify({ before, after, s });
    expect(s.reconnects, detail).to.equal(1);
    expect(s.state, detail).to.equal('playing');
    expect(after.error, detail).to.equal(null);
    expect(after.videoWidth, detail).to.be.greaterThan(0);
    expect(after.currentTime - before.currentTime, detail).to.be.at.least(2);
    expect(after.decodedFrames, detail).to.be.greaterThan(before.decodedFrames);
    console.log(`      playing again ${backAfterMs} ms after the relay was started again (${s.retries} connection attempts)`);
  });

  it('says so when the relay is full (close code 1013) and keeps trying', async function () {
    await relay?.stop();
    relay = await startRelay(['--max-viewers', '1']);
    await waitLive(relay, 15_000);
    browser ??= await launchBrowser();
    context ??= await browser.newContext();
    const first = await context.newPage();
    await first.goto(`${relay.url}/`);
    await waitState(first, 'playing', 15_000);
    const second = await context.newPage();
    await second.goto(`${relay.url}/`);
    await waitState(second, 'full', 10_000);
    expect(await second.locator('#notice').innerText()).to.match(/too many viewers; trying again in \d+(\.\d)? s/);
    expect(await second.locator('#status').innerText()).to.equal('relay full');
    expect((await playerSnapshot(first)).state).to.equal('playing');
  });
});
