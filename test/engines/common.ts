/** What the engine tests share: waiting on a page, the quality report, a CPU hog. */
import { appendFileSync } from 'node:fs';
import { EngineHungError, unlessHung, type EnginePage } from '../helpers/engines.js';
import type { PlayerSnapshot } from '../helpers/browser.js';
import { describeQuality, type PlaybackQuality } from '../helpers/quality.js';

export async function waitUntil(page: EnginePage, what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await page.evaluate(check).catch(unlessHung(false))) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The player page shows a picture and says it is live; on a timeout, the error says what the player was doing. */
export async function waitPlaying(page: EnginePage, timeoutMs = 20_000): Promise<void> {
  try {
    await waitUntil(
      page,
      'the player to play',
      () => {
        const player = (window as unknown as { player?: { state: string; firstFrameMs: number | null } }).player;
        return player?.state === 'playing' && player.firstFrameMs !== null;
      },
      timeoutMs,
    );
  } catch (error) {
    if (error instanceof EngineHungError) throw error;
    const player = await snapshot(page).catch((e: Error) => `no snapshot: ${e.message}`);
    const video = await clock(page).catch(() => null);
    throw new Error(`${(error as Error).message}; the player: ${JSON.stringify(player)}; the video: ${JSON.stringify(video)}`);
  }
}

/**
 * Runs `attempt`; if a page stopped answering (a browser bug, see EngineHungError), says
 * so, runs `cleanUp` (if any) and then `attempt` once more with fresh pages. Any other failure, or
 * a second hang, fails the test.
 */
export async function retryOnceIfHung<T>(what: string, attempt: () => Promise<T>, cleanUp: () => Promise<void> = async () => {}): Promise<T> {
  try {
    return await attempt();
  } catch (error) {
    if (!(error instanceof EngineHungError)) throw error;
    console.log(`      ${what}: the browser stopped answering, once; starting over with a fresh one. ${error.message}`);
    await cleanUp();
    return await attempt();
  }
}

export function snapshot(page: EnginePage): Promise<PlayerSnapshot> {
  return page.evaluate(() => (window as unknown as { player: { snapshot(): PlayerSnapshot } }).player.snapshot());
}

/** currentTime, and whether the element plays, of the page's <video>. */
export function clock(page: EnginePage): Promise<{ t: number; paused: boolean; error: string | null; width: number }> {
  return page.evaluate(() => {
    const v = document.querySelector('video')!;
    return { t: v.currentTime, paused: v.paused, error: v.error ? `${v.error.code}: ${v.error.message}` : null, width: v.videoWidth };
  });
}

/**
 * Figures per engine and case, printed and (with WEBM_RELAY_QUALITY_LOG=file) appended as
 * JSON lines to a file: the README's table is made from them.
 */
export function report(engine: string, version: string, what: string, q: PlaybackQuality, extra: Record<string, unknown> = {}): void {
  console.log(`      ${engine} ${what}: ${describeQuality(q)}${Object.keys(extra).length ? ` ${JSON.stringify(extra)}` : ''}`);
  const file = process.env.WEBM_RELAY_QUALITY_LOG;
  if (file) appendFileSync(file, `${JSON.stringify({ engine, version, what, ...q, ...extra })}\n`);
}

