/**
 * A playback-quality measure that works the same in every engine: a sampler installed
 * in the page watches the first <video> every 100 ms and counts what a viewer would
 * notice. Read with `readQuality`.
 */
import type { EnginePage } from './engines.js';

export interface PlaybackQuality {
  /** ms from installing the probe to the first decoded frame with the clock running, null if never. */
  firstFrameMs: number | null;
  /** Times the clock stood still for 500 ms or more while not paused (after the first frame). */
  stalls: number;
  /** Stalls that began more than `settleMs` after the first frame. */
  stallsAfterSettle: number;
  /** Total time stood still, ms. */
  stalledMs: number;
  /** Times currentTime moved forward by more than 0.5 s beyond the wall-clock time passed (a jump over a hole or a skip). */
  jumps: number;
  /** Samples in which `buffered` had a hole ahead of the playhead, after the first frame. */
  holeSamples: number;
  /** Largest hole seen in `buffered`, s. */
  largestHoleS: number;
  /** Lag behind the end of `buffered`, s: median and largest after settling. */
  lagMedianS: number;
  lagMaxS: number;
  decodedFrames: number;
  droppedFrames: number;
  /** Times the element was seen paused after it had played. */
  pausedSamples: number;
  /** `video.error` if any, as "code: message". */
  error: string | null;
  /** playback time covered, s. */
  playedS: number;
  /** Samples taken. */
  samples: number;
  /** The first stalls after settling: when (s after the first frame), how long, how much was buffered ahead as it began, how long after the latest seek and pause it began, and the player's target then. */
  stallLog: { atS: number; ms: number; aheadS: number; sinceSeekMs: number | null; sincePauseMs: number | null; target: number | null }[];
}

/** Starts the sampler; `settleMs`: stalls and lag before that long after the first frame are startup, not counted in the "after" figures. */
export async function installQuality(page: EnginePage, settleMs = 1000): Promise<void> {
  await page.evaluate((settle: number) => {
    type State = {
      start: number;
      first: number | null;
      lastTime: number;
      lastWall: number;
      stillSince: number | null;
      stillAhead: number;
      stillSinceSeek: number | null;
      stillSincePause: number | null;
      lastPauseAt: number | null;
      stillTarget: number | null;
      lastSeekAt: number | null;
      stallLog: PlaybackQuality['stallLog'];
      stalls: number;
      stallsAfter: number;
      stalledMs: number;
      jumps: number;
      holes: number;
      largestHole: number;
      lags: number[];
      paused: number;
      playedFrom: number | null;
      samples: number;
      error: string | null;
      timer: number;
    };
    const w = window as unknown as { __quality?: State };
    if (w.__quality) clearInterval(w.__quality.timer);
    const s: State = {
      start: performance.now(), first: null, lastTime: 0, lastWall: performance.now(), stillSince: null, stillAhead: 0, stillSinceSeek: null, stillSincePause: null, lastPauseAt: null, stillTarget: null, lastSeekAt: null, stallLog: [], stalls: 0, stallsAfter: 0,
      stalledMs: 0, jumps: 0, holes: 0, largestHole: 0, lags: [], paused: 0, playedFrom: null, samples: 0, error: null, timer: 0,
    };
    w.__quality = s;
    let watched: HTMLVideoElement | null = null;
    s.timer = window.setInterval(() => {
      const video = document.querySelector('video');
      const now = performance.now();
      if (!video) return;
      if (video !== watched) {
        watched = video;
        video.addEventListener('seeking', () => (s.lastSeekAt = performance.now()));
        video.addEventListener('pause', () => (s.lastPauseAt = performance.now()));
      }
      s.samples++;
      if (video.error) s.error = `${video.error.code}: ${video.error.message}`;
      const t = video.currentTime;
      if (s.first === null) {
        if (t > 0 && video.videoWidth > 0 && !video.paused) {
          s.first = now;
          s.playedFrom = t;
          s.lastTime = t;
          s.lastWall = now;
        }
        return;
      }
      const wall = (now - s.lastWall) / 1000;
      if (t - s.lastTime > wall + 0.5) s.jumps++;
      if (video.paused) s.paused++;
      const b = video.buffered;
      if (!video.paused && t === s.lastTime) {
        if (s.stillSince === null) {
          s.stillSince = s.lastWall;
          s.stillAhead = b.length > 0 ? b.end(b.length - 1) - t : 0;
          s.stillSinceSeek = s.lastSeekAt === null ? null : Math.round(s.lastWall - s.lastSeekAt);
          s.stillSincePause = s.lastPauseAt === null ? null : Math.round(s.lastWall - s.lastPauseAt);
          s.stillTarget = (window as unknown as { player?: { latency: { target: number } } }).player?.latency.target ?? null;
        }
      } else if (s.stillSince !== null) {
        const still = now - s.stillSince;
        if (still >= 500) {
          s.stalls++;
          s.stalledMs += still;
          if (s.stillSince - s.first > settle) {
            s.stallsAfter++;
            if (s.stallLog.length < 5) s.stallLog.push({ atS: (s.stillSince - s.first) / 1000, ms: Math.round(still), aheadS: s.stillAhead, sinceSeekMs: s.stillSinceSeek, sincePauseMs: s.stillSincePause, target: s.stillTarget });
          }
        }
        s.stillSince = null;
      }
      // A hole ahead of the playhead is one playback must stall at or jump over (one behind
      // it, left by the start at the live edge, is history).
      let hole = false;
      for (let i = 1; i < b.length; i++) {
        if (b.end(i - 1) < t - 0.01) continue;
        hole = true;
        s.largestHole = Math.max(s.largestHole, b.start(i) - b.end(i - 1));
      }
      if (hole) s.holes++;
      if (b.length > 0 && now - s.first > settle) s.lags.push(b.end(b.length - 1) - t);
      s.lastTime = t;
      s.lastWall = now;
    }, 100);
  }, settleMs);
}

export async function readQuality(page: EnginePage): Promise<PlaybackQuality> {
  return page.evaluate(() => {
    const s = (window as unknown as { __quality: Record<string, unknown> & { lags: number[]; first: number | null; start: number; stillSince: number | null } }).__quality;
    const video = document.querySelector('video');
    const q = video && 'getVideoPlaybackQuality' in video ? video.getVideoPlaybackQuality() : null;
    const lags = [...s.lags].sort((a, b) => a - b);
    const now = performance.now();
    // A stall still going on counts.
    const ongoing = s.stillSince !== null && now - s.stillSince >= 500 ? 1 : 0;
    return {
      firstFrameMs: s.first === null ? null : Math.round(s.first - s.start),
      stalls: (s.stalls as number) + ongoing,
      stallsAfterSettle: (s.stallsAfter as number) + ongoing,
      stalledMs: Math.round((s.stalledMs as number) + (ongoing ? now - (s.stillSince as number) : 0)),
      jumps: s.jumps as number,
      holeSamples: s.holes as number,
      largestHoleS: s.largestHole as number,
      lagMedianS: lags.length ? lags[Math.floor(lags.length / 2)] : 0,
      lagMaxS: lags.length ? lags[lags.length - 1] : 0,
      decodedFrames: q ? q.totalVideoFrames : 0,
      droppedFrames: q ? q.droppedVideoFrames : 0,
      pausedSamples: s.paused as number,
      error: s.error as string | null,
      playedS: video && s.playedFrom !== null ? video.currentTime - (s.playedFrom as number) : 0,
      samples: s.samples as number,
      stallLog: s.stallLog as PlaybackQuality['stallLog'],
    };
  });
}

export function describeQuality(q: PlaybackQuality): string {
  return (
    `first frame ${q.firstFrameMs} ms, played ${q.playedS.toFixed(1)} s, stalls ${q.stalls} (${q.stallsAfterSettle} after settling, ${q.stalledMs} ms), ` +
    `jumps ${q.jumps}, hole samples ${q.holeSamples} (largest ${q.largestHoleS.toFixed(3)} s), lag median ${q.lagMedianS.toFixed(2)} s max ${q.lagMaxS.toFixed(2)} s, ` +
    `frames ${q.decodedFrames} decoded ${q.droppedFrames} dropped${q.error ? `, error ${q.error}` : ''}` +
    q.stallLog
      .map((l) => `; stall at ${l.atS.toFixed(1)} s, ${l.ms} ms, ${l.aheadS.toFixed(2)} s buffered ahead${l.sinceSeekMs === null ? '' : `, ${l.sinceSeekMs} ms after a seek`}${l.sincePauseMs === null ? '' : `, ${l.sincePauseMs} ms after a pause`}${l.target === null ? '' : `, target ${l.target.toFixed(2)} s`}`)
      .join('')
  );
}
