import { expect } from 'chai';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { FAKE_MEDIA_ARGS, launchBrowser, playerSnapshot, sampleVideo, sleep, watchErrors, type VideoSample } from '../helpers/browser.js';
import http from 'node:http';
import { getJson, waitFor } from '../helpers/relay.js';
import type { StreamStats } from '../../src/protocol.js';
import { PUBLISH_TOKEN, backwards, blockTimes, startWithConfig } from './helpers.js';

interface PublisherState {
  state: string;
  message: string;
  closeCode: number;
  mimeType: string;
  keyframeIntervalMs: number | null;
  bytesSent: number;
  viewers: number | null;
  recorders: number;
  protocol: string;
}

const publisherState = (page: Page) => page.evaluate(() => (window as unknown as { publisher: { snapshot(): PublisherState } }).publisher.snapshot());

async function waitPublisher(page: Page, state: string, timeoutMs = 20_000): Promise<PublisherState> {
  await page.waitForFunction((wanted) => (window as unknown as { publisher?: { snapshot(): { state: string } } }).publisher?.snapshot().state === wanted, state, {
    timeout: timeoutMs,
    polling: 100,
  });
  return publisherState(page);
}

describe('publish: going live from a browser page (Chromium, fake camera)', function () {
  this.timeout(120_000);
  let relay: Awaited<ReturnType<typeof startWithConfig>>;
  let browser: Browser;
  let context: BrowserContext;

  before(async () => {
    relay = await startWithConfig(`streams:\n  guest:\n    publish: { token: ${PUBLISH_TOKEN} }\n    producer-grace: 30\n`);
    browser = await launchBrowser(FAKE_MEDIA_ARGS);
    context = await browser.newContext();
  });
  after(async () => {
    await browser?.close();
    await relay?.stop();
  });

  const publishUrl = (token: string) => `${relay.url}/guest/publish?token=${encodeURIComponent(token)}&autostart=1`;
  let publisher: Page;

  it('goes live; an MSE player and a plain <video> play it at the camera\'s 640 px; a publisher that closes and comes back is a restart: viewers play on, timestamps never go back', async () => {
    publisher = await context.newPage();
    const publisherErrors = watchErrors(publisher);
    await publisher.goto(publishUrl(PUBLISH_TOKEN));
    const live = await waitPublisher(publisher, 'live');
    expect(live.mimeType, JSON.stringify(live)).to.match(/^video\/webm;codecs=vp[89],opus$/);
    expect(live.protocol, 'the page presents its token as a subprotocol').to.equal('webm-relay.publish');
    await waitFor('the stream to be live', async () => (await getJson<StreamStats>(`${relay.url}/api/streams/guest`)).live, 15_000);

    // A recorder of its own reads the plain stream across the restart, to check every timestamp.
    const recorded: Buffer[] = [];
    const recording = http.get(`${relay.url}/guest.webm`, (response) => response.on('data', (chunk: Buffer) => recorded.push(chunk)));
    recording.on('error', () => {});

    const player = await context.newPage();
    const playerErrors = watchErrors(player);
    await player.goto(`${relay.url}/guest/`);
    const plain = await context.newPage();
    await plain.goto(`${relay.url}/api/stats`);
    await plain.setContent(`<video src="${relay.url}/guest.webm" autoplay muted playsinline></video>`);

    const samples: { at: string; player: VideoSample; plain: VideoSample }[] = [];
    const sample = async (at: string) => samples.push({ at, player: await sampleVideo(player), plain: await sampleVideo(plain) });
    await player.waitForFunction(() => (window as unknown as { player: { state: string } }).player.state === 'playing', null, { timeout: 20_000 });
    await plain.waitForFunction(() => document.querySelector('video')!.currentTime > 0.5, null, { timeout: 20_000 });
    // Sampled until both clocks have run a second (given time: the machine may be busy with other tests).
    const sampleUntil = async (at: string, done: () => boolean, timeoutMs: number) => {
      const deadline = Date.now() + timeoutMs;
      do {
        await sample(at);
        await sleep(250);
      } while (!done() && Date.now() < deadline);
    };
    await sample('before');
    const first = samples[0];
    const ran = (from: (typeof samples)[number], seconds: number) => () => {
      const now = samples[samples.length - 1];
      return now.player.currentTime > from.player.currentTime + seconds && now.plain.currentTime > from.plain.currentTime + seconds;
    };
    await sampleUntil('before', ran(first, 1.5), 15_000);
    const beforeRestart = samples[samples.length - 1];
    for (const [which, s] of [['player', beforeRestart.player], ['plain', beforeRestart.plain]] as const) {
      expect(s.videoWidth, `${which}: ${JSON.stringify(s)}`).to.equal(640);
      expect(s.error, which).to.equal(null);
    }
    expect(beforeRestart.player.currentTime).to.be.greaterThan(first.player.currentTime + 1);
    expect(beforeRestart.plain.currentTime).to.be.greaterThan(first.plain.currentTime + 1);

    // The publisher goes away (its tab closed) and comes back with a new recording.
    await publisher.close();
    for (let i = 0; i < 6; i++) {
      await sample('gone');
      await sleep(250);
    }
    publisher = await context.newPage();
    await publisher.goto(publishUrl(PUBLISH_TOKEN));
    await waitPublisher(publisher, 'live');
    const reopened = samples.length;
    await sampleUntil('after', ran(samples[reopened - 1], 3), 30_000);
    for (let i = 0; i < 4; i++) {
      await sample('after');
      await sleep(250);
    }
    const last = samples[samples.length - 1];
    const atReopen = samples[reopened - 1];
    const detail = JSON.stringify(samples.map((s) => [s.at, s.player.currentTime.toFixed(2), s.plain.currentTime.toFixed(2), s.player.decodedFrames]));
    expect(backwards(samples.map((s) => s.player.currentTime)), `player clock: ${detail}`).to.deep.equal([]);
    expect(backwards(samples.map((s) => s.plain.currentTime)), `plain clock: ${detail}`).to.deep.equal([]);
    expect(last.player.currentTime, `player after the restart: ${detail}`).to.be.greaterThan(atReopen.player.currentTime + 2);
    expect(last.plain.currentTime, `plain after the restart: ${detail}`).to.be.greaterThan(atReopen.plain.currentTime + 2);
    expect(last.player.decodedFrames).to.be.greaterThan(atReopen.player.decodedFrames + 20);
    expect(last.player.error).to.equal(null);
    expect(last.plain.error).to.equal(null);
    const snapshot = await playerSnapshot(player);
    expect(snapshot.mediaErrors, JSON.stringify(snapshot)).to.equal(0);

    const stats = await getJson<StreamStats>(`${relay.url}/api/streams/guest`);
    expect(stats.ingest.producers, JSON.stringify(stats.ingest)).to.equal(2);
    expect(stats.normalizer.seamlessRestarts, JSON.stringify(stats.normalizer)).to.equal(1);
    expect(relay.log()).to.match(/guest: websocket 127\.0\.0\.1:\d+: producer connected/);

    recording.destroy();
    const bytes = Buffer.concat(recorded);
    const times = blockTimes(bytes);
    expect(times.size, 'video and audio tracks').to.equal(2);
    for (const [track, list] of times) {
      expect(list.length, `track ${track}`).to.be.greaterThan(40);
      expect(backwards(list), `track ${track} timestamps`).to.deep.equal([]);
    }
    // The poster (snapshot.jpg) may answer 503 before the snapshot keeper has a keyframe.
    expect(playerErrors.filter((e) => !/status of 503/.test(e)), 'player page errors').to.deep.equal([]);
    expect(publisherErrors).to.deep.equal([]);
    await player.close();
    await plain.close();
  });

  it('shows the viewer count, bitrate and time live on the publisher page', async () => {
    const viewer = await context.newPage();
    await viewer.goto(`${relay.url}/guest/`);
    await viewer.waitForFunction(() => (window as unknown as { player: { state: string } }).player.state === 'playing', null, { timeout: 20_000 });
    // The plain-stream recorder of the test before may still be counted.
    await publisher.waitForFunction(() => Number(document.getElementById('viewers')!.textContent) >= 1, null, { timeout: 10_000 });
    const shown = await publisher.evaluate(() => ({
      bitrate: document.getElementById('bitrate')!.textContent!,
      uptime: document.getElementById('uptime')!.textContent!,
      keyframes: document.getElementById('keyframes')!.textContent!,
    }));
    const kbps = Number(/^(\d+) kbit\/s$/.exec(shown.bitrate)?.[1]);
    expect(kbps, JSON.stringify(shown)).to.be.within(50, 5000);
    expect(shown.uptime).to.match(/^\d+:\d\d$/);
    expect(shown.keyframes, 'Chromium takes videoKeyFrameIntervalDuration').to.match(/every second/);
    await viewer.close();
  });

  it('refuses a second publisher with a message on its page (close 4409), and a wrong token (close 4403, PUT 401)', async () => {
    const second = await context.newPage();
    await second.goto(publishUrl(PUBLISH_TOKEN));
    const refused = await waitPublisher(second, 'refused');
    expect(refused.closeCode).to.equal(4409);
    expect(await second.textContent('#notice')).to.match(/Someone else is publishing this stream/);
    await second.close();

    const wrong = await context.newPage();
    await wrong.goto(publishUrl('not-the-token-at-all'));
    const denied = await waitPublisher(wrong, 'refused');
    expect(denied.closeCode).to.equal(4403);
    expect(await wrong.textContent('#notice')).to.match(/Wrong publish token/);
    await wrong.close();

    const put = await fetch(`${relay.url}/guest.webm`, { method: 'PUT', headers: { Authorization: 'Bearer not-the-token-at-all' }, body: 'x' });
    expect(put.status).to.equal(401);
    const metrics = await (await fetch(`${relay.url}/metrics`)).text();
    expect(metrics).to.match(/webm_relay_access_failures_total\{stream="guest",kind="publish"\} 2\b/);
    expect(metrics).to.match(/webm_relay_producers_refused_total\{stream="guest"\} 1\b/);
    expect(relay.log()).to.match(/guest: publish websocket from 127\.0\.0\.1: refused \(wrong token\)/);
    // The first publisher is still the one on air.
    expect((await publisherState(publisher)).state).to.equal('live');
  });
});
