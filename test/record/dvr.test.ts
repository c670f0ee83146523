import fs from 'node:fs';
import { expect } from 'chai';
import type { Browser } from 'playwright-core';
import { launchBrowser, playerSnapshot, watchErrors } from '../helpers/browser.js';
import { sleep, startRelay, waitFor, type RunningRelay } from '../helpers/relay.js';
import { ENCODER_ARGS, tempDir, waitForLog } from './common.js';

/** Gray levels of every 4th row of a <video>'s current picture, drawn at 320x240. */
async function grab(page: import('playwright-core').Page, id: string): Promise<{ rows: number[]; atMs: number; lag: number; position: number }> {
  return page.evaluate((videoId) => {
    const video = document.getElementById(videoId) as HTMLVideoElement;
    const canvas = document.createElement('canvas');
    canvas.width = 320;
    canvas.height = 240;
    const context = canvas.getContext('2d', { willReadFrequently: true })!;
    context.drawImage(video, 0, 0, 320, 240);
    const data = context.getImageData(0, 0, 320, 240).data;
    const rows: number[] = [];
    for (let y = 0; y < 240; y += 4) for (let x = 0; x < 320; x++) rows.push(Math.round((data[(y * 320 + x) * 4] + data[(y * 320 + x) * 4 + 1] + data[(y * 320 + x) * 4 + 2]) / 3));
    const w = window as unknown as { player: { lag: number }; dvr: { positionMs(): number | null } };
    return { rows, atMs: Date.now(), lag: w.player.lag, position: w.dvr.positionMs() ?? 0 };
  }, id);
}

/** The smallest mean difference between two pictures over horizontal shifts of up to `maxShift` px (the test pattern scrolls 4 px a frame). */
function bestMatch(a: number[], b: number[], maxShift = 100): { difference: number; shift: number } {
  let best = { difference: Infinity, shift: 0 };
  for (let shift = -maxShift; shift <= maxShift; shift++) {
    let sum = 0;
    for (let i = 0; i < a.length; i++) {
      const x = i % 320;
      const row = i - x;
      sum += Math.abs(a[i] - b[row + ((x + shift + 320) % 320)]);
    }
    const difference = sum / a.length;
    if (difference < best.difference) best = { difference, shift };
  }
  return best;
}

interface DvrSnapshot {
  rewinding: boolean;
  behind: number;
  reach: number;
  window: number;
  error: string | null;
  currentTime: number;
  /** Segments fetched, by where the relay had them. */
  fetched: { memory: number; disk: number };
  placements: number;
  bufferedRanges: number;
}

describe('Rewinding the live stream (DVR) in Chromium', function () {
  this.timeout(120_000);
  let relay: RunningRelay | null = null;
  let browser: Browser | null = null;
  let root = '';

  after(async () => {
    await browser?.close();
    await relay?.stop();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  it('the player rewinds 20 s into the recording, plays from there at normal speed, and returns to live', async () => {
    root = tempDir('dvr');
    relay = await startRelay(['--record', root, '--record-segment', '10', ...ENCODER_ARGS]);
    await waitForLog(relay, /recording into/);
    const recordingSince = Date.now();
    browser = await launchBrowser();
    const page = await browser.newPage();
    const errors = watchErrors(page);
    await page.goto(`${relay.url}/`);
    await waitFor('the player to play', async () => (await playerSnapshot(page)).state === 'playing', 20_000);
    // Two live pictures a second apart, and when they arrived at the relay (now minus the player's lag).
    await sleep(3000);
    const live0 = await grab(page, 'video');
    await sleep(1000);
    const live1 = await grab(page, 'video');
    const shownAt = live0.atMs - live0.lag * 1000;
    // 25 s recorded: the 20 s back lies in an earlier file than the one being written.
    await sleep(recordingSince + 25_000 - Date.now());
    await page.waitForSelector('#dvr:not([hidden])', { timeout: 15_000 });
    const dvr = () => page.evaluate(() => (window as unknown as { dvr: { snapshot(): DvrSnapshot } }).dvr.snapshot());
    expect((await dvr()).reach).to.be.greaterThan(20);

    // A person drags the timeline to 20 s behind live.
    await page.$eval('#dvr-timeline', (input) => {
      (input as HTMLInputElement).value = '-20';
      input.dispatchEvent(new Event('input'));
      input.dispatchEvent(new Event('change'));
    });
    await waitFor('the recording to play', async () => {
      const s = await dvr();
      return s.rewinding && s.currentTime > 0;
    }, 15_000).catch(async (error: Error) => {
      const state = await page.$eval('#rewind', (v) => {
        const video = v as HTMLVideoElement;
        return { src: video.src, readyState: video.readyState, networkState: video.networkState, error: video.error?.message ?? null, paused: video.paused };
      });
      throw new Error(`${error.message}: ${JSON.stringify({ dvr: await dvr(), video: state, errors })}\n${relay!.log().slice(-3000)}`);
    });
    const a = await dvr();
    await sleep(3000);
    const b = await dvr();
    const shown = await page.$eval('#rewind', (v) => ({ display: getComputedStyle(v).display, width: (v as HTMLVideoElement).videoWidth, paused: (v as HTMLVideoElement).paused }));
    const label = await page.$eval('#dvr-behind', (e) => e.textContent);
    console.log(`      rewound: ${a.behind.toFixed(2)} s behind live, then ${b.behind.toFixed(2)} s 3 s later (played ${(b.currentTime - a.currentTime).toFixed(2)} s); label "${label}"`);
    expect(b.error).to.equal(null);
    expect(a.behind).to.be.within(19, 21.5);
    // Normal speed: the distance to live stays the same while it plays.
    expect(b.currentTime - a.currentTime).to.be.within(2.4, 3.6);
    expect(Math.abs(b.behind - a.behind)).to.be.lessThan(0.6);
    expect(shown).to.deep.equal({ display: 'block', width: 320, paused: false });
    expect(label).to.match(/^−(19|20|21|22) s$/);

    // Live again, at the live edge.
    await page.click('#dvr-live');
    await waitFor('the live edge', async () => {
      const [s, p] = await Promise.all([dvr(), playerSnapshot(page)]);
      return !s.rewinding && p.lag < 1;
    }, 10_000);
    const back = await playerSnapshot(page);
    console.log(`      back to live: lag ${back.lag.toFixed(2)} s`);
    expect(await page.$eval('#video', (v) => getComputedStyle(v).display)).to.equal('block');
    expect(await page.$eval('#dvr-behind', (e) => e.textContent)).to.equal('live');

    // The picture of the rewound stream is the one shown live back then.
    await page.evaluate((seconds) => (window as unknown as { dvr: { seekBack(s: number): Promise<void> } }).dvr.seekBack(seconds), (Date.now() - shownAt) / 1000);
    const rewound = await grab(page, 'rewind');
    const same = bestMatch(live0.rows, rewound.rows);
    const later = bestMatch(live1.rows, rewound.rows);
    console.log(
      `      picture at ${((rewound.position - shownAt) / 1000).toFixed(3)} s from the one shown live: difference ${same.difference.toFixed(1)} (shift ${same.shift} px); ` +
        `against the live picture 1 s later ${later.difference.toFixed(1)}`,
    );
    // Within a few frames of the time asked for (the player's lag is an estimate)...
    expect(Math.abs(rewound.position - shownAt)).to.be.lessThan(800);
    // ...and the same picture: nearly no difference once scrolled by that many frames (4 px each, 30 a second).
    expect(same.difference).to.be.lessThan(later.difference / 3);
    expect(Math.abs(Math.abs(same.shift) - (4 * 30 * Math.abs(rewound.position - shownAt)) / 1000)).to.be.at.most(12);
    expect(errors.filter((e) => !/favicon|404/.test(e))).to.deep.equal([]);
  });
});
