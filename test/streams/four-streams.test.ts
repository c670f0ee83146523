/**
 * One relay, four named streams from one `--config` file, each from a different kind of
 * producer: two GStreamer encoders the relay spawns (different patterns and sizes), an
 * ffmpeg producer over TCP (VP9) and an ffmpeg publisher over `PUT` (VP8). Each viewer
 * must get its own stream and nothing of another's.
 */
import { expect } from 'chai';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Browser, BrowserContext } from 'playwright-core';
import { launchBrowser, playerSnapshot, sampleVideo, sleep, watchErrors } from '../helpers/browser.js';
import { gstChildren, killTracked, type Producer } from '../helpers/faults.js';
import { capture, freePort, trimToCompleteBlocks, type Capture } from '../helpers/relay.js';
import {
  ffmpegPutProducer,
  ffmpegTcpProducer,
  startConfigRelay,
  streamList,
  streamStats,
  waitListening,
  waitStreamsLive,
  type ConfigRelay,
} from '../helpers/streams.js';
import { decodeErrors, parseStream, shutdown } from '../helpers/viewers.js';

const TOKEN = 'guest-token-0123456789abcdef';

/** What each stream is, as its producer makes it: what its viewers must get. */
const EXPECTED: Record<string, { width: number; height: number; codecs: string[] }> = {
  cam: { width: 320, height: 240, codecs: ['vp8', 'opus'] },
  ball: { width: 480, height: 270, codecs: ['vp8'] },
  stage: { width: 400, height: 224, codecs: ['vp9', 'opus'] },
  guest: { width: 256, height: 144, codecs: ['vp8', 'opus'] },
};
const NAMES = Object.keys(EXPECTED);

describe('streams: four named streams from one config file', function () {
  this.timeout(120_000);
  let relay: ConfigRelay | null = null;
  let browser: Browser | null = null;
  let context: BrowserContext | null = null;
  const producers: Producer[] = [];

  before(async function () {
    const stagePort = await freePort();
    relay = await startConfigRelay(
      [
        'max-viewers: 50',
        'streams:',
        '  cam:',
        '    encoder:',
        '      video-source: videotestsrc is-live=true pattern=smpte horizontal-speed=4',
        '      width: 320',
        '      height: 240',
        '      framerate: 15',
        '      video-bitrate: 300',
        '      audio-bitrate: 32',
        '  ball:',
        '    encoder: { video-source: videotestsrc is-live=true pattern=ball, audio-source: none, width: 480, height: 270, framerate: 15, video-bitrate: 300 }',
        '  stage:',
        `    listen: tcp://127.0.0.1:${stagePort}`,
        '  guest:',
        `    publish: { token: ${TOKEN} }`,
        '',
      ].join('\n'),
    );
    await waitListening(relay, stagePort);
    producers.push(ffmpegTcpProducer(stagePort, { pattern: 'testsrc2', size: '400x224', codec: 'vp9' }));
    producers.push(ffmpegPutProducer(`${relay.url}/guest.webm`, TOKEN, { pattern: 'testsrc', size: '256x144', codec: 'vp8' }));
    await waitStreamsLive(relay, NAMES, 25_000, producers);
  });

  after(async function () {
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await killTracked();
    await shutdown(relay);
  });

  it('runs exactly two gst-launch-1.0 (the two encoders); /api/streams lists the four; /metrics labels each', async function () {
    // Before anything asks for a snapshot: its decoder is a short-lived gst-launch-1.0 too.
    const gst = gstChildren(relay!.process.pid!);
    const encoderPids = await Promise.all(['cam', 'ball'].map(async (name) => (await streamStats(relay!, name)).encoder?.pid));
    expect(gst, relay!.log()).to.have.length(2);
    expect([...gst].sort()).to.deep.equal([...encoderPids].sort());
    for (const name of ['stage', 'guest']) expect((await streamStats(relay!, name)).encoder, name).to.equal(null);

    const list = await streamList(relay!);
    expect(list.map((s) => s.name)).to.deep.equal(NAMES);
    for (const s of list) {
      const want = EXPECTED[s.name];
      expect(s.live, s.name).to.equal(true);
      expect(s.mimeType, s.name).to.equal(`video/webm; codecs="${want.codecs.join(',')}"`);
      const video = s.tracks.find((t) => t.kind === 'video')!;
      expect([video.width, video.height], s.name).to.deep.equal([want.width, want.height]);
      expect(s.bitrate, s.name).to.be.above(0);
      expect(s.urls.webm).to.equal(`${s.name}.webm`);
    }

    const metrics = await (await fetch(`${relay!.url}/metrics`)).text();
    for (const name of NAMES) {
      expect(metrics, name).to.include(`webm_relay_live{stream="${name}"} 1`);
      expect(metrics, name).to.match(new RegExp(`^webm_relay_bytes_in_total\\{stream="${name}"\\} [1-9]\\d*$`, 'm'));
    }
    expect(metrics).to.match(/^# TYPE webm_relay_clusters_total counter$/m);
  });

  it('HTTP viewers of each stream get that stream only (its size and codecs), and every capture decodes', async function () {
    const captures: Capture[] = await Promise.all(NAMES.map((name) => capture(`${relay!.url}/${name}.webm`, 3000)));
    const errors = await Promise.all(captures.map((c) => decodeErrors(trimToCompleteBlocks(c.body))));
    const sizes: string[] = [];
    NAMES.forEach((name, i) => {
      const { status, headers, body } = captures[i];
      const want = EXPECTED[name];
      expect(status, name).to.equal(200);
      expect(headers['content-type'], name).to.equal('video/webm');
      const parsed = parseStream(body);
      expect(parsed.errors, name).to.deep.equal([]);
      expect(parsed.headers, `${name}: one init segment`).to.equal(1);
      const tracks = parsed.info!.tracks;
      expect(tracks.map((t) => t.mseCodec), name).to.deep.equal(want.codecs);
      const video = tracks.find((t) => t.kind === 'video')!;
      expect([video.width, video.height], name).to.deep.equal([want.width, want.height]);
      // Every block belongs to a track of this stream's header.
      const numbers = new Set(tracks.map((t) => t.number));
      const blocks = parsed.clusters.flatMap((c) => c.blocks);
      // 45 frames at 15 fps; an overloaded machine makes the encoders drop most of them.
      expect(blocks.filter((b) => b.video).length, `${name}: video frames in 3 s`).to.be.at.least(2);
      expect(blocks.filter((b) => !numbers.has(b.track)), name).to.deep.equal([]);
      expect(parsed.clusters[0].blocks.find((b) => b.video)?.keyframe, `${name}: starts at a keyframe`).to.equal(true);
      expect(errors[i], `${name}: ffmpeg -v error`).to.deep.equal([]);
      sizes.push(`${name} ${body.length} B`);
    });
    console.log(`      3 s captures: ${sizes.join(', ')}`);
  });

  it('Chromium plays /cam/ and /stage/, each at its own size', async function () {
    browser = await launchBrowser();
    context = await browser.newContext({ viewport: { width: 800, height: 500 } });
    const pages = await Promise.all(['cam', 'stage'].map(async (name) => {
      const page = await context!.newPage();
      const errors = watchErrors(page);
      await page.goto(`${relay!.url}/${name}/`);
      return { name, page, errors };
    }));
    for (const { page } of pages) {
      await page.waitForFunction(() => (window as unknown as { player?: { state: string } }).player?.state === 'playing', null, { timeout: 20_000 });
    }
    // Each must advance by 1.5 s of media and 5 frames; on a loaded 2-core machine that may take much longer than 1.5 s.
    await Promise.all(pages.map(async ({ name, page, errors }) => {
      const before = await sampleVideo(page);
      let after = before;
      const deadline = Date.now() + 25_000;
      while (Date.now() < deadline) {
        await sleep(500);
        after = await sampleVideo(page);
        if (after.currentTime - before.currentTime >= 1.5 && after.decodedFrames - before.decodedFrames >= 5) break;
      }
      const detail = JSON.stringify({ name, before, after, player: await playerSnapshot(page), errors });
      expect(after.error, detail).to.equal(null);
      expect([after.videoWidth, after.videoHeight], detail).to.deep.equal([EXPECTED[name].width, EXPECTED[name].height]);
      expect(after.currentTime - before.currentTime, detail).to.be.at.least(1.5);
      expect(after.decodedFrames - before.decodedFrames, detail).to.be.at.least(5);
      console.log(`      /${name}/: ${(after.currentTime - before.currentTime).toFixed(1)} s played, ${after.decodedFrames - before.decodedFrames} frames`);
    }));
    await Promise.all(pages.map(({ page }) => page.close()));
  });

  it('the list page at / shows the four streams, live, each with its picture', async function () {
    if (!browser) browser = await launchBrowser();
    context ??= await browser.newContext({ viewport: { width: 1400, height: 700 } });
    const page = await context.newPage();
    await page.setViewportSize({ width: 1400, height: 700 });
    const errors = watchErrors(page);
    await page.goto(`${relay!.url}/`);
    type Card = { name: string; live: string; state: string; complete: boolean; naturalWidth: number; naturalHeight: number; hidden: boolean };
    const cards = (): Promise<Card[]> =>
      page.$$eval('li.stream-card', (items) =>
        items.map((item) => {
          const img = item.querySelector('img')!;
          return {
            name: (item as HTMLElement).dataset.name ?? '',
            live: (item as HTMLElement).dataset.live ?? '',
            state: item.querySelector('.status')?.textContent ?? '',
            complete: img.complete,
            naturalWidth: img.naturalWidth,
            naturalHeight: img.naturalHeight,
            hidden: img.hidden === true,
          };
        }),
      );
    let last: Card[] = [];
    // The page asks for pictures every 6 s; each is a decode by a short-lived gst-launch-1.0.
    const deadline = Date.now() + 40_000;
    for (;;) {
      last = await cards();
      if (last.length === 4 && last.every((c) => c.complete && c.naturalWidth > 0)) break;
      if (Date.now() > deadline) throw new Error(`the list did not show four pictures: ${JSON.stringify({ last, errors })}`);
      await sleep(250);
    }
    expect(last.map((c) => c.name)).to.deep.equal(NAMES);
    for (const card of last) {
      expect(card.live, card.name).to.equal('true');
      expect(card.state, card.name).to.equal('live');
      expect(card.hidden, card.name).to.equal(false);
      // The picture is the stream's own latest keyframe, at its size.
      expect([card.naturalWidth, card.naturalHeight], card.name).to.deep.equal([EXPECTED[card.name].width, EXPECTED[card.name].height]);
    }
    expect(await page.textContent('#updated')).to.equal('4 streams');
    // Kept after the run, to be looked at.
    const screenshot = path.join(mkdtempSync(path.join(os.tmpdir(), 'webm-relay-streams-list-')), 'streams.png');
    await page.screenshot({ path: screenshot, fullPage: true });
    console.log(`      the stream list: ${screenshot}`);
    // A snapshot the relay could not decode in time is a 503 the page retries: not a page error.
    expect(errors.filter((e) => !e.includes('status of 503'))).to.deep.equal([]);
  });
});
