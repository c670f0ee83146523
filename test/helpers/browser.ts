import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

/** Debian's Chromium; `npx playwright install` is not how this project gets a browser. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--autoplay-policy=no-user-gesture-required',
];

/** `extraArgs`: e.g. FAKE_MEDIA_ARGS for a page that records a camera. */
export async function launchBrowser(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, ...extraArgs], headless: true, timeout: 30_000 });
}

/** A fake camera (640x480, a moving pattern) and microphone (a beep), allowed without asking. */
export const FAKE_MEDIA_ARGS = ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'];

/** What the player page exposes as `window.player.snapshot()` (public/js/player.js). */
export interface PlayerSnapshot {
  state: string;
  message: string;
  mimeType: string | null;
  codecs: string;
  width: number;
  height: number;
  bitrate: number;
  lag: number;
  /** The latency controller's current target behind live, s (rises after stalls). */
  targetLatency: number;
  lead: number;
  /** 'rate' while playbackRate catches up, 'seek' where it does not work (WebKit). */
  latencyMode: 'rate' | 'seek';
  latencyModeReason: string;
  catchUpSeeks: number;
  /** Times the relay skipped media for a slow link (holes jumped after the start), and seconds skipped. */
  skips: number;
  skippedSeconds: number;
  unexpectedPauses: number;
  unexpectedUnmutes: number;
  /** Muted plays the browser refused (NotAllowedError); the player tries again. */
  refusedPlays: number;
  currentTime: number;
  playbackRate: number;
  bufferedSeconds: number;
  bufferedRanges: number;
  decodedFrames: number;
  droppedFrames: number;
  reconnects: number;
  retries: number;
  viewers: number | null;
  firstFrameMs: number | null;
  startupMs: number | null;
  starts: number;
  jumps: number;
  gapJumps: number;
  evictions: number;
  quotaErrors: number;
  mediaErrors: number;
  stalls: number;
  muted: boolean;
  timeline: Record<string, number>;
}

export function playerSnapshot(page: Page): Promise<PlayerSnapshot> {
  return page.evaluate(() => (window as unknown as { player: { snapshot(): PlayerSnapshot } }).player.snapshot());
}

/** What any <video> on a page shows, read as a person would judge it: size, time, frames, error. */
export interface VideoSample {
  currentTime: number;
  videoWidth: number;
  videoHeight: number;
  paused: boolean;
  readyState: number;
  error: string | null;
  decodedFrames: number;
}

export function sampleVideo(page: Page, selector = 'video'): Promise<VideoSample> {
  return page.$eval(selector, (element) => {
    const video = element as HTMLVideoElement;
    return {
      currentTime: video.currentTime,
      videoWidth: video.videoWidth,
      videoHeight: video.videoHeight,
      paused: video.paused,
      readyState: video.readyState,
      error: video.error ? `${video.error.code}: ${video.error.message}` : null,
      decodedFrames: video.getVideoPlaybackQuality().totalVideoFrames,
    };
  });
}

/** Collects console errors and uncaught exceptions of a page, for assertions and failure messages. */
export function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') errors.push(`console.${message.type()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
  return errors;
}

/** Opens `count` pages in one context (tabs of one window). */
export async function openPages(context: BrowserContext, url: string, count: number): Promise<Page[]> {
  const pages: Page[] = [];
  for (let i = 0; i < count; i++) {
    const page = await context.newPage();
    pages.push(page);
    await page.goto(url);
  }
  return pages;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

import { sleep } from './relay.js';
export { sleep };
