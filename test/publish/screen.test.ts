/**
 * A `publish: browser` stream from the publish page in Chromium: the screen
 * (getDisplayMedia) in VP9, the stream list with its picture, and how long a late
 * viewer waits for its first frame against the keyframe interval the relay sends.
 */
import { expect } from 'chai';
import http from 'node:http';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import type { StreamStats } from '../../src/protocol.js';
import { FAKE_MEDIA_ARGS, launchBrowser, playerSnapshot, sleep, watchErrors } from '../helpers/browser.js';
import { getJson, waitFor } from '../helpers/relay.js';
import { parseStream } from '../helpers/viewers.js';
import { PUBLISH_TOKEN, startWithConfig } from './helpers.js';

/** Chromium's getDisplayMedia picks the (fake) screen without asking. */
const SCREEN_ARGS = [...FAKE_MEDIA_ARGS, '--auto-select-desktop-capture-source=Entire screen'];

interface PublisherState {
  state: string;
  message: string;
  mimeType: string;
  keyframeIntervalMs: number | null;
  protocol: string;
}

const publisherState = (page: Page) => page.evaluate(() => (window as unknown as { publisher: { snapshot(): PublisherState } }).publisher.snapshot());

async function goLive(context: BrowserContext, url: string): Promise<{ page: Page; state: PublisherState; errors: string[] }> {
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(url);
  await page
    .waitForFunction(() => (window as unknown as { publisher?: { snapshot(): { state: string } } }).publisher?.snapshot().state === 'live', null, { timeout: 20_000, polling: 100 })
    .catch(async (error: Error) => {
      throw new Error(`the publisher did not go live: ${JSON.stringify(await publisherState(page))} ${errors.join('; ')} (${error.message})`);
    });
  return { page, state: await publisherState(page), errors };
}

interface KeyframeCapture {
  /** Media time between consecutive video keyframes, ms. */
  intervalsMs: number[];
  /** From sending the request to the arrival of the first media cluster (a keyframe), ms. */
  firstClusterMs: number;
}

/** Reads `/<name>.webm` for `ms` as a plain client: the keyframe spacing the relay sends, and how long this viewer waited for its first cluster. */
function captureKeyframes(url: string, ms: number): Promise<KeyframeCapture> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const arrivals: { end: number; at: number }[] = [];
    const chunks: Buffer[] = [];
    let length = 0;
    const request = http.get(url, (response) => {
      response.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        length += chunk.length;
        arrivals.push({ end: length, at: performance.now() - started });
      });
    });
    request.on('error', () => {});
    setTimeout(() => {
      request.destroy();
      const parsed = parseStream(Buffer.concat(chunks));
      const first = parsed.clusters[0];
      if (!first || !parsed.info) return reject(new Error(`no cluster in ${length} bytes from ${url}`));
      const msPerTick = parsed.info.timecodeScale / 1e6;
      const keyframes = parsed.clusters.flatMap((c) => c.blocks.filter((b) => b.video && b.keyframe).map((b) => b.timecode * msPerTick));
      // The cluster has arrived once its first block's bytes have (its header alone is a few bytes).
      const needed = first.offset + Math.min(first.bytes.length, 64);
      resolve({
        intervalsMs: keyframes.slice(1).map((t, i) => t - keyframes[i]),
        firstClusterMs: arrivals.find((a) => a.end >= needed)!.at,
      });
    }, ms);
  });
}

interface LateViewer {
  /** From the viewer's WebSocket being opened to its first frame on screen, ms. */
  connectToFrameMs: number;
  codecs: string;
  mimeType: string | null;
  width: number;
}

/** Opens the player page and waits for a picture; the wait is the player's own timeline (connect to first frame). */
async function lateViewer(context: BrowserContext, url: string): Promise<{ page: Page; viewer: LateViewer }> {
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForFunction(() => (window as unknown as { player: { state: string } }).player.state === 'playing', null, { timeout: 20_000 });
  const snapshot = await playerSnapshot(page);
  return {
    page,
    viewer: {
      connectToFrameMs: snapshot.timeline.frame - snapshot.timeline.connect,
      codecs: snapshot.codecs,
      mimeType: snapshot.mimeType,
      width: snapshot.width,
    },
  };
}

describe('publish: a publish: browser stream, from the screen in VP9 and from the camera (Chromium)', function () {
  this.timeout(150_000);
  let relay: Awaited<ReturnType<typeof startWithConfig>>;
  let browser: Browser;
  let context: BrowserContext;

  before(async () => {
    relay = await startWithConfig(
      [
        'streams:',
        '  room:',
        '    publish: browser',
        `    publish-token: ${PUBLISH_TOKEN}`,
        // A viewer starts at the next keyframe: the longest a late viewer can wait.
        '  desk:',
        '    publish: browser',
        `    publish-token: ${PUBLISH_TOKEN}`,
        '    join: next-keyframe',
        '',
      ].join('\n'),
    );
    browser = await launchBrowser(SCREEN_ARGS);
    context = await browser.newContext();
  });
  // A failed test must not leave its publisher on air for the next one.
  afterEach(async () => {
    for (const page of context.pages()) await page.close();
  });
  after(async () => {
    await browser?.close();
    await relay?.stop();
  });

  it('shares the screen (getDisplayMedia) in VP9 with ?source=screen&codec=vp9: viewers get codecs="vp9,opus" and the picture moves; the stream list shows it live with its picture', async () => {
    const publisher = await goLive(context, `${relay.url}/room/publish?token=${PUBLISH_TOKEN}&autostart=1&source=screen&codec=vp9`);
    expect(publisher.state.mimeType, JSON.stringify(publisher.state)).to.equal('video/webm;codecs=vp9,opus');
    const track = await publisher.page.evaluate(() => {
      const stream = (document.getElementById('preview') as HTMLVideoElement).srcObject as MediaStream;
      const video = stream.getVideoTracks()[0];
      return { displaySurface: (video.getSettings() as { displaySurface?: string }).displaySurface, label: video.label };
    });
    expect(track.displaySurface, `the preview is a screen capture: ${JSON.stringify(track)}`).to.equal('monitor');
    await waitFor('room live', async () => (await getJson<StreamStats>(`${relay.url}/api/streams/room`)).live, 15_000);

    const { page: player, viewer } = await lateViewer(context, `${relay.url}/room/`);
    expect(viewer.mimeType).to.equal('video/webm; codecs="vp9,opus"');
    expect(viewer.codecs.split(', ').sort(), 'the tracks').to.deep.equal(['opus', 'vp9']);
    expect(viewer.width, 'the fake screen is 1280 wide').to.equal(1280);
    const first = await playerSnapshot(player);
    await player.waitForFunction(
      (from) => {
        const video = document.querySelector('video')!;
        return video.currentTime > from.currentTime + 2 && video.getVideoPlaybackQuality().totalVideoFrames > from.frames + 20;
      },
      { currentTime: first.currentTime, frames: first.decodedFrames },
      { timeout: 20_000 },
    );
    const later = await playerSnapshot(player);
    console.log(`      screen VP9: ${first.currentTime.toFixed(2)} -> ${later.currentTime.toFixed(2)} s, frames ${first.decodedFrames} -> ${later.decodedFrames}, media errors ${later.mediaErrors}`);
    expect(later.mediaErrors).to.equal(0);

    // The stream list (two streams: / is the list): room live with a picture, desk offline without one.
    const list = await context.newPage();
    await list.goto(`${relay.url}/`);
    await list.waitForFunction(
      () => {
        const img = document.querySelector<HTMLImageElement>('li[data-name="room"] img');
        return document.querySelector('li[data-name="room"]')?.getAttribute('data-live') === 'true' && !!img && !img.hidden && img.complete && img.naturalWidth > 0;
      },
      null,
      { timeout: 20_000 },
    );
    const cards = await list.$$eval('li.stream-card', (items) =>
      items.map((item) => ({
        name: item.getAttribute('data-name'),
        live: item.getAttribute('data-live'),
        picture: (item.querySelector('img') as HTMLImageElement).hidden ? 0 : (item.querySelector('img') as HTMLImageElement).naturalWidth,
      })),
    );
    expect(cards).to.deep.equal([
      { name: 'room', live: 'true', picture: 1280 },
      { name: 'desk', live: 'false', picture: 0 },
    ]);
    expect(publisher.errors).to.deep.equal([]);
    await list.close();
    await player.close();
    await publisher.page.close();
  });

  it('a late viewer waits at most one keyframe interval for its first frame (camera, VP8; join latest-keyframe and next-keyframe)', async () => {
    const rows: string[] = [];
    for (const [name, join] of [['room', 'latest-keyframe'], ['desk', 'next-keyframe']] as const) {
      const publisher = await goLive(context, `${relay.url}/${name}/publish?token=${PUBLISH_TOKEN}&autostart=1`);
      expect(publisher.state.keyframeIntervalMs, 'the page asked for a keyframe every second').to.equal(1000);
      await waitFor(`${name} live`, async () => (await getJson<StreamStats>(`${relay.url}/api/streams/${name}`)).live, 15_000);
      // Let the recorder settle: the first seconds of a recording are not typical.
      await sleep(2000);
      const capture = captureKeyframes(`${relay.url}/${name}.webm`, 7000);
      await sleep(3000);
      const { page, viewer } = await lateViewer(context, `${relay.url}/${name}/`);
      const { intervalsMs, firstClusterMs } = await capture;
      const longest = Math.max(...intervalsMs);
      const mean = intervalsMs.reduce((a, b) => a + b, 0) / intervalsMs.length;
      rows.push(
        `${name} (join ${join}): keyframe interval the relay sends: mean ${mean.toFixed(0)} ms, longest ${longest.toFixed(0)} ms (${intervalsMs.length} intervals); ` +
          `plain client to its first cluster ${firstClusterMs.toFixed(0)} ms; player from connecting to its first frame ${viewer.connectToFrameMs} ms`,
      );
      console.log(`      ${rows[rows.length - 1]}`);
      expect(intervalsMs.length, 'keyframes in 7 s').to.be.greaterThan(3);
      // Chromium honours videoKeyFrameIntervalDuration: 1 s, give or take a frame or two
      // when the machine is busy (1301 ms seen under load); without it, about 5 s.
      expect(longest, 'the keyframe interval').to.be.below(1500);
      // A plain client: at most one interval, plus one recorder chunk (200 ms) on its way.
      expect(firstClusterMs, 'plain client: request to first cluster').to.be.below(longest + 250);
      // The player: at most one interval, plus decoding and starting its first frame (up to 0.8 s on a loaded machine).
      expect(viewer.connectToFrameMs, 'player: connect to first frame').to.be.below(longest + (join === 'next-keyframe' ? 800 : 0));
      await page.close();
      await publisher.page.close();
    }
  });
});
