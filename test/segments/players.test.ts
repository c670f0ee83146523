import { expect } from 'chai';
import http from 'node:http';
import type { Browser, Page } from 'playwright-core';
import { launchBrowser, playerSnapshot, sampleVideo, watchErrors } from '../helpers/browser.js';
import { gstProducer, killTracked } from '../helpers/faults.js';
import { sleep, waitFor } from '../helpers/relay.js';
import { fetchStreamed, readSegments } from './readers.js';
import { startOrigin, type Origin } from './standalone.js';
import { startVarnish, type Varnish } from './varnish.js';

async function waitPlaying(page: Page, timeoutMs = 30_000): Promise<void> {
  await page.waitForFunction(
    () => {
      const player = (window as unknown as { player?: { state: string; video: HTMLVideoElement } }).player;
      return player?.state === 'playing' && player.video.currentTime > 0;
    },
    null,
    { timeout: timeoutMs, polling: 100 },
  );
}

/** currentTime advances by at least `seconds` within `withinMs`. */
async function expectAdvancing(page: Page, seconds: number, withinMs: number, label: string): Promise<void> {
  const before = await sampleVideo(page);
  const deadline = Date.now() + withinMs;
  let after = before;
  while (Date.now() < deadline) {
    await sleep(250);
    after = await sampleVideo(page);
    if (after.currentTime - before.currentTime >= seconds) break;
  }
  expect(after.currentTime - before.currentTime, `${label}: ${JSON.stringify({ before, after })}`).to.be.at.least(seconds);
  expect(after.error, label).to.equal(null);
}

describe('segments: Chromium players through Varnish (segment transport)', function () {
  this.timeout(180_000);
  let origin: Origin | null = null;
  let varnish: Varnish | null = null;
  let browser: Browser | null = null;
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });

  after(async () => {
    agent.destroy();
    await browser?.close().catch(() => {});
    await varnish?.stop();
    await origin?.close();
    await killTracked();
  });

  it('two players (one chose segments, one fell back from a WebSocket that cannot connect) play next to 200 readers; the relay sees each segment URL once; Varnish killed and restarted: they say so and play again', async () => {
    const o = await startOrigin();
    origin = o;
    gstProducer(o.ingestPort);
    await waitFor('the first complete segment', () => o.segmenter.segments.length >= 1, 20_000);
    const v = await startVarnish(o.port);
    varnish = v;
    browser = await launchBrowser();
    const context = await browser.newContext();
    const chosen = await context.newPage();
    const fallback = await context.newPage();
    const errors = [watchErrors(chosen), watchErrors(fallback)];
    await chosen.goto(`${v.url}/?transport=segments`);
    // Varnish pipes the WebSocket to this origin, which has none: the upgrade fails.
    await fallback.goto(`${v.url}/`);
    await Promise.all([waitPlaying(chosen), waitPlaying(fallback)]);
    for (const page of [chosen, fallback]) {
      const s = (await playerSnapshot(page)) as Awaited<ReturnType<typeof playerSnapshot>> & { transport: string; segment: number | null };
      expect(s.transport).to.equal('segments');
      expect(s.segment).to.be.a('number');
    }

    // 200 readers beside them, for three segments each.
    const results = await Promise.all(Array.from({ length: 200 }, () => readSegments(`${v.url}/live/`, 3, agent)));
    // Kept-alive sockets idle past Varnish's timeout_idle (5 s) are closed by it: no reuse later.
    agent.destroy();
    await expectAdvancing(chosen, 2, 6000, 'segments player');
    await expectAdvancing(fallback, 2, 6000, 'fallback player');
    const epoch = results[0].epoch;
    const segmentUrls = [...o.requests.entries()].filter(([p]) => /^\/live\/[0-9a-z]+\/\d+\.webm$/.test(p));
    expect(segmentUrls.length).to.be.greaterThan(3);
    for (const [p, n] of segmentUrls) expect(n, p).to.equal(1);
    expect(o.requests.get(`/live/${epoch}/init.webm`)).to.equal(1);
    for (const r of results) {
      for (const [seq, got] of r.segments) {
        const direct = o.segmenter.lookup(epoch, seq);
        expect(direct.kind).to.equal('segment');
        if (direct.kind === 'segment') expect(got.body.equals(Buffer.concat(direct.segment.chunks))).to.equal(true);
      }
    }
    const snapshots = await Promise.all([chosen, fallback].map((p) => playerSnapshot(p)));
    // (Holes in `buffered` are not asserted here: on a loaded machine the encoder drops
    // frames, and what MSE makes of those gaps is the normalizer's business, not the transport's.)
    for (const s of snapshots) expect(s.mediaErrors, JSON.stringify(s)).to.equal(0);

    // Varnish dies in the middle of a segment.
    await waitFor('a segment well under way', () => (o.segmenter.partial?.bytes ?? 0) > 4000, 10_000);
    await v.kill();
    for (const page of [chosen, fallback]) {
      await page.waitForFunction(() => {
        const player = (window as unknown as { player: { state: string; message: string } }).player;
        return player.state === 'reconnecting' && /Segments: /.test(player.message);
      }, null, { timeout: 15_000, polling: 100 });
    }
    const said = await chosen.evaluate(() => (window as unknown as { player: { message: string } }).player.message);
    expect(said).to.match(/trying again in/);

    varnish = await startVarnish(o.port, { port: v.port });
    await Promise.all([waitPlaying(chosen, 30_000), waitPlaying(fallback, 30_000)]);
    await expectAdvancing(chosen, 2, 8000, 'segments player after Varnish restarted');
    await expectAdvancing(fallback, 2, 8000, 'fallback player after Varnish restarted');
    const final = await playerSnapshot(chosen);
    expect(final.reconnects).to.be.at.least(1);
    expect(errors.flat().filter((e) => /pageerror/.test(e))).to.deep.equal([]);
    // And the new Varnish still collapses requests: a fresh segment URL, one origin request.
    const index = JSON.parse((await fetchStreamed(`${varnish.url}/live/index.json`, false)).body.toString()) as { epoch: string; partial: { seq: number } };
    const next = `/live/${index.epoch}/${index.partial.seq + 1}.webm`;
    const before = o.requests.get(next) ?? 0;
    await Promise.all(Array.from({ length: 20 }, () => fetchStreamed(varnish!.url + next, false)));
    expect((o.requests.get(next) ?? 0) - before).to.be.at.most(1);
  });
});

describe('segments: the player in a background tab', function () {
  this.timeout(120_000);
  let origin: Origin | null = null;
  let browser: Browser | null = null;

  after(async () => {
    await browser?.close().catch(() => {});
    await origin?.close();
    await killTracked();
  });

  it('a tab whose scripts stopped in the background for 8 s comes back at the live edge from index.json', async () => {
    const o = await startOrigin();
    origin = o;
    gstProducer(o.ingestPort);
    await waitFor('the first complete segment', () => o.segmenter.segments.length >= 1, 20_000);
    browser = await launchBrowser();
    const page = await browser.newPage();
    await page.goto(`${o.url}/?transport=segments`);
    await waitPlaying(page);
    // Hidden, and then no script runs for 6 s (a background tab throttled to nothing):
    // nothing is read or appended meanwhile, while the stream goes on.
    await page.evaluate(() => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    const hiddenAt = o.segmenter.partial!.seq;
    await page.evaluate(() => {
      const until = Date.now() + 8000;
      while (Date.now() < until);
    });
    expect(o.segmenter.partial!.seq - hiddenAt).to.be.at.least(2);
    const before = await playerSnapshot(page);
    await page.evaluate(() => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'visible' });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    const partial = () => o.segmenter.partial?.seq ?? -1;
    await page.waitForFunction(
      (live) => {
        const player = (window as unknown as { player: { transport: { segment: number | null } } }).player;
        return (player.transport.segment ?? -1) >= live - 1;
      },
      partial(),
      { timeout: 10_000, polling: 100 },
    );
    await waitPlaying(page);
    await expectAdvancing(page, 1, 6000, 'after the background');
    const after = await playerSnapshot(page);
    // Back at the live edge: started over from index.json, or jumped ahead in what arrived.
    expect(after.reconnects + after.jumps, JSON.stringify({ before, after })).to.be.greaterThan(before.reconnects + before.jumps);
    expect(after.lag, JSON.stringify(after)).to.be.below(3);
  });
});
