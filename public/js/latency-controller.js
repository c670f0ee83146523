// Latency controller: holds the playhead near the live edge (after hls.js's latency-controller).
// lag = end of what is buffered - currentTime. A little above the target, play slightly
// faster (never more than maxRate, so nobody hears it); well below it, slightly slower
// (never less than minRate), so that a target that rose builds its buffer without a stall
// (dash.js's live catch-up does both); where playbackRate does nothing or
// has side effects (WebKit's MSE: it ignores the rate, and setting it unmutes the video,
// after which the autoplay policy pauses it), catch up with small seeks instead. Far
// behind (a background tab, a stall), jump; in a hole of `buffered`, skip to the next range.
// The target itself adapts: it rises after each stall (hls.js's liveSyncOnStallIncrease)
// up to a ceiling, and comes back down slowly once playback has been smooth. Below it
// lies a floor that needs no stall to learn: the longest recent wait for new media plus
// two of the longest recent frame intervals, as the relay measures them (Firefox stops
// to buffer with up to two frames still buffered: at a few frames a second, as a screen
// capture or a MediaRecorder sends them, that is up to a second of media).

const DEFAULTS = {
  /** Seconds behind the live edge we aim for on a good link. */
  targetLatency: 0.3,
  /** The most the target rises to after stalls. */
  maxTargetLatency: 3,
  /** Added to the target at each stall. */
  stallIncrease: 0.3,
  /** Smooth playback for this long before the target comes down. */
  relaxAfterMs: 15_000,
  /** Then it comes down by this many seconds per second. */
  relaxPerSecond: 0.01,
  /** Lag beyond which we seek instead of speeding up (at least the target plus 1.5 s). */
  maxLatency: 2,
  /** Highest playbackRate used to catch up. */
  maxRate: 1.1,
  /** Lowest playbackRate used to fall back to the target. */
  minRate: 0.9,
  /** Lag at its peak this far below the target makes playback slow down. */
  slowTolerance: 0.1,
  /** Lag within this of the target is left alone (no rate hunting). */
  tolerance: 0.05,
  /** Lag above the target at which the rate reaches maxRate. */
  rampSeconds: 0.3,
  /** Without a working playbackRate: lag above the target that a seek cuts, and how often at most. */
  seekCatchUpExcess: 0.2,
  seekCatchUpEveryMs: 3000,
  /**
   * Just after a start the rest of the relay's GOP may still be arriving: for this long,
   * a lag beyond target + startSlack is cut with a seek (the viewer barely saw anything yet),
   * until the clock first moves. After that the rate catches up: a seek decodes again from
   * the keyframe before its target, and on a busy machine that stalled the picture it had
   * just started (Chromium 0.6 s, Firefox 2.3 s, with a second or more buffered ahead).
   * Catching up with seeks (WebKit) it stays a seek.
   */
  startWindowMs: 3000,
  startSlack: 0.3,
  /** A playhead stuck this long inside a range, with more ranges ahead, goes on to the next one. */
  stuckJumpMs: 1500,
};

export class LatencyController {
  /** @param {HTMLVideoElement} video @param {Partial<typeof DEFAULTS>} options */
  constructor(video, options = {}) {
    this.video = video;
    this.options = { ...DEFAULTS, ...options };
    /** What stalls added to the target: see stalled() and relax(). */
    this.stallExtra = 0;
    /** [wall time, ms] of each wait between two appends that moved the end of `buffered`, over the last 20 s. */
    this.arrivalGaps = /** @type {[number, number][]} */ ([]);
    /** A bad second's longest interval between two video frames and longest wait for them, s, as the relay last measured them (see told()). */
    this.longestFrame = 0;
    this.toldWait = 0;
    this.lastEnd = -1;
    this.lastAdvanceAt = -1;
    this.jumps = 0;
    this.gapJumps = 0;
    /** Seconds of media jumped over in holes of `buffered` (a relay that skipped a GOP for a slow link). */
    this.skippedSeconds = 0;
    this.catchUpSeeks = 0;
    /** 'rate' while playbackRate works; 'seek' once it proved useless or harmful. */
    this.mode = /** @type {'rate' | 'seek'} */ ('rate');
    /** Why the mode is 'seek', for the overlay. */
    this.modeReason = '';
    // WebKit's GStreamer media backend (WebKitGTK, WPE) unmutes the video whenever it applies
    // a playbackRate, even one set back to 1, and its autoplay policy then pauses the video:
    // a freeze of up to a second when the player plays it again. Finding that out by trying
    // (probeRate) costs the same freeze, so there the player never touches the rate.
    if (gstreamerWebKit(navigator.userAgent)) {
      this.mode = 'seek';
      this.modeReason = "WebKit's GStreamer backend unmutes the video when playbackRate changes";
    }
    this.startedAt = -Infinity;
    /** The clock has moved since the last start (see startWindowMs). */
    this.movedSinceStart = false;
    this.lastStallAt = -Infinity;
    this.lastTickAt = performance.now();
    this.lastCatchUpAt = -Infinity;
    /** When the current seek began (-1: none): a seek that hangs is abandoned. */
    this.seekingSince = -1;
    /** currentTime at the previous tick: unchanged while playing means stuck. */
    this.lastTime = -1;
    /** When the playhead was first seen stuck (-1: it moves). */
    this.stuckSince = -1;
    /** While the rate is above 1: where and when that began, to see whether it works. */
    this.rateProbe = /** @type {{ wall: number, media: number, rate: number } | null} */ (null);
    this.rateIgnoredProbes = 0;
    /** Set just before we change playbackRate: a volumechange right after is its side effect. */
    this.rateChangedAt = -Infinity;
    video.addEventListener('volumechange', () => {
      if (performance.now() - this.rateChangedAt < 1000 && !video.muted && this.wantMuted) this.rateHasSideEffects('it unmuted the video');
    });
    /** Whether the page wants the video muted (the player sets this; a person's unmute clears it). */
    this.wantMuted = true;
  }

  /**
   * Before the first play: does changing playbackRate have side effects here (WebKit
   * unmutes the video, and its autoplay policy then pauses it at the next seek)? Found out
   * while nothing plays it costs nothing; found out while catching up or slowing down it
   * cost WebKit a stall of 1-2 s.
   */
  probeRate() {
    if (this.mode === 'seek') return;
    const video = this.video;
    const wasMuted = video.muted;
    this.rateChangedAt = performance.now();
    video.playbackRate = 1.01;
    video.playbackRate = 1;
    if (wasMuted && !video.muted && this.wantMuted) this.rateHasSideEffects('it unmuted the video');
  }

  /** Playback (re)started now: see startWindowMs. */
  started() {
    this.startedAt = performance.now();
    this.rateProbe = null;
    this.movedSinceStart = false;
    // The start's own seek is no movement of the clock.
    this.lastTime = -1;
  }

  /**
   * Seconds behind live to aim for now: the floor (the longest wait for new media of the
   * last 20 s, from a variable-frame-rate producer or a jittery link, plus the media the
   * engine must hold while it waits, see `lead`), or the configured target if higher,
   * plus what stalls added. Never above the ceiling.
   */
  get target() {
    let longestWait = this.toldWait;
    for (const [, ms] of this.arrivalGaps) longestWait = Math.max(longestWait, ms / 1000);
    const floor = longestWait > 0 ? longestWait + this.lead : 0;
    return Math.min(this.options.maxTargetLatency, Math.max(this.options.targetLatency, floor) + this.stallExtra);
  }

  /**
   * Media that must still be buffered when new media arrives: two of the longest recent
   * frame intervals, and never less than 0.15 s. At 30 frames a second that is the 0.15 s;
   * with frames up to 0.5 s apart, 1.1 s.
   */
  get lead() {
    return Math.max(0.15, 2 * this.longestFrame + 0.1);
  }

  /**
   * What the relay measured of the stream's pacing over the last 20 s, with the stream's
   * description and every pong. The frame interval is the stream's, from the producer's
   * timestamps: the frames a browser presents say more about its renderer (a busy headless
   * Chromium presented 30 frames a second a third of a second apart). The wait is the
   * relay's; the player's own waits (a jittery link) count beside it.
   * @param {import('../../src/protocol.js').StreamPacing | undefined} pacing
   */
  told(pacing) {
    if (!pacing) return;
    this.longestFrame = Math.min(1, pacing.frameIntervalMs / 1000);
    this.toldWait = pacing.waitMs / 1000;
  }

  /**
   * The tab was hidden or shown: a hidden tab's scripts are throttled or stopped, so
   * the wait that spans it says nothing about the network and must not raise the target.
   */
  visibilityChanged() {
    this.lastAdvanceAt = -1;
  }

  /** Media was appended: notes how long the end of `buffered` had stood still before. */
  appended() {
    const ranges = this.video.buffered;
    if (ranges.length === 0) return;
    if (document.visibilityState === 'hidden') this.lastAdvanceAt = -1;
    const end = ranges.end(ranges.length - 1);
    const now = performance.now();
    if (end > this.lastEnd) {
      // Not across a (re)start or a jump: those are no waits for media.
      if (this.lastAdvanceAt >= 0 && end - this.lastEnd < 2) this.arrivalGaps.push([now, now - this.lastAdvanceAt]);
      this.lastEnd = end;
      this.lastAdvanceAt = now;
    } else if (end < this.lastEnd - 2) {
      this.lastEnd = end;
      this.lastAdvanceAt = now;
    }
    while (this.arrivalGaps.length > 0 && now - this.arrivalGaps[0][0] > 20_000) this.arrivalGaps.shift();
  }

  /** Playback ran dry: aim further behind live (up to the ceiling), once per stall however many `waiting` events it fires. */
  stalled() {
    const now = performance.now();
    if (now - this.startedAt < this.options.startWindowMs || now - this.lastStallAt < 2000) return;
    this.lastStallAt = now;
    this.stallExtra = Math.min(this.options.maxTargetLatency, this.stallExtra + this.options.stallIncrease);
  }

  /** Seconds behind the end of what is buffered (0 when nothing is). */
  get lag() {
    const ranges = this.video.buffered;
    if (ranges.length === 0) return 0;
    return Math.max(0, ranges.end(ranges.length - 1) - this.video.currentTime);
  }

  /**
   * Where to start playing once the first keyframe is buffered: at the first buffered frame
   * (the keyframe), or, if the relay sent a whole GOP, just behind the live edge.
   * The decoder starts from the keyframe either way.
   */
  startPosition() {
    const ranges = this.video.buffered;
    if (ranges.length === 0) return null;
    const last = ranges.length - 1;
    return Math.max(ranges.start(last), ranges.end(last) - this.target);
  }

  /** Call often (timeupdate, a timer, when the tab becomes visible). */
  tick() {
    const video = this.video;
    const wallNow = performance.now();
    const elapsed = (wallNow - this.lastTickAt) / 1000;
    this.lastTickAt = wallNow;
    this.relax(elapsed, wallNow);
    const ranges = video.buffered;
    if (ranges.length === 0) return;
    if (video.seeking) {
      // A seek that never completes (Chromium, into media it dropped after a gap): go to the live edge instead.
      if (this.seekingSince < 0) this.seekingSince = wallNow;
      else if (wallNow - this.seekingSince > 2000) {
        this.seekingSince = -1;
        this.jumps++;
        video.currentTime = Math.max(ranges.start(ranges.length - 1), ranges.end(ranges.length - 1) - this.target);
      }
      return;
    }
    this.seekingSince = -1;
    const now = video.currentTime;
    const { maxRate, tolerance, rampSeconds } = this.options;
    const target = this.target;
    const maxLatency = Math.max(this.options.maxLatency, target + 1.5);

    // In a hole, before the first range, or stuck at the end of a range with more after it:
    // go to the next range that starts ahead.
    const stuck = !video.paused && (now === this.lastTime || video.readyState < HTMLMediaElement.HAVE_FUTURE_DATA);
    if (now !== this.lastTime && this.lastTime >= 0) this.movedSinceStart = true;
    this.lastTime = now;
    if (!stuck) this.stuckSince = -1;
    else if (this.stuckSince < 0) this.stuckSince = wallNow;
    const end = rangeEnd(ranges, now);
    // Stuck inside a range for long (Chromium, when a track of the range has a hole too
    // small to split what `buffered` shows, left by media the relay skipped): that hole
    // never fills, so go on to the next range as from its end.
    const stuckLong = stuck && this.stuckSince >= 0 && wallNow - this.stuckSince > this.options.stuckJumpMs;
    if (end === null || (stuck && end - now < 0.1) || stuckLong) {
      for (let i = 0; i < ranges.length; i++) {
        if (ranges.start(i) > now) {
          this.gapJumps++;
          this.skippedSeconds += ranges.start(i) - now;
          this.stuckSince = -1;
          video.currentTime = ranges.start(i) + 0.001;
          return;
        }
      }
    }

    const lag = this.lag;
    const starting = wallNow - this.startedAt < this.options.startWindowMs && (!this.movedSinceStart || this.mode === 'seek');
    if (lag > maxLatency || (starting && lag > target + this.options.startSlack)) {
      this.jumps++;
      this.setRate(1);
      video.currentTime = Math.max(ranges.start(ranges.length - 1), ranges.end(ranges.length - 1) - target);
      return;
    }
    const excess = lag - target;
    if (this.mode === 'seek') {
      if (excess > this.options.seekCatchUpExcess && wallNow - this.lastCatchUpAt > this.options.seekCatchUpEveryMs && !video.paused) {
        this.lastCatchUpAt = wallNow;
        this.catchUpSeeks++;
        video.currentTime = now + excess;
      }
      return;
    }
    this.checkRateWorks(wallNow, now);
    // Lag is at its peak when media arrives and falls until more does: the target is for
    // the peak (see `target`), so a shortfall is measured from the lag at the last arrival.
    const sinceArrival = this.lastAdvanceAt >= 0 ? (wallNow - this.lastAdvanceAt) / 1000 : 0;
    const shortfall = target - (lag + sinceArrival * video.playbackRate);
    const { minRate, slowTolerance } = this.options;
    if (excess > tolerance) this.setRate(Math.min(maxRate, 1 + ((maxRate - 1) * excess) / rampSeconds));
    else if (shortfall > slowTolerance) this.setRate(Math.max(minRate, 1 - ((1 - minRate) * shortfall) / rampSeconds));
    else if (video.playbackRate > 1 ? excess <= 0 : shortfall <= 0) this.setRate(1);
  }

  /** After smooth playback what stalls added to the target goes away, slowly. @param {number} elapsed s @param {number} wallNow */
  relax(elapsed, wallNow) {
    if (this.stallExtra <= 0 || wallNow - this.lastStallAt < this.options.relaxAfterMs) return;
    this.stallExtra = Math.max(0, this.stallExtra - this.options.relaxPerSecond * Math.min(elapsed, 1));
  }

  /**
   * While the rate has been above 1 for 3 s: did the media clock run faster than the wall
   * clock? WebKit's MSE ignores playbackRate; then catching up needs seeks.
   * @param {number} wallNow @param {number} mediaNow
   */
  checkRateWorks(wallNow, mediaNow) {
    const video = this.video;
    const probe = this.rateProbe;
    if (video.playbackRate <= 1 || video.paused || video.seeking) {
      this.rateProbe = null;
      return;
    }
    if (!probe || probe.rate !== video.playbackRate) {
      this.rateProbe = { wall: wallNow, media: mediaNow, rate: video.playbackRate };
      return;
    }
    const wall = (wallNow - probe.wall) / 1000;
    if (wall < 3) return;
    const speed = (mediaNow - probe.media) / wall;
    // A busy machine slows the media clock too (late frames, short stalls): only a clock
    // that runs at exactly 1, twice in a row, ignores the rate (WebKit's MSE).
    const ignored = speed > 0.97 && speed < 1 + Math.min(0.02, (probe.rate - 1) * 0.3);
    this.rateIgnoredProbes = ignored ? this.rateIgnoredProbes + 1 : 0;
    if (this.rateIgnoredProbes >= 2) this.useSeeks(`playbackRate ${probe.rate} had no effect (×${speed.toFixed(2)})`);
    this.rateProbe = null;
  }

  /** @param {string} what */
  rateHasSideEffects(what) {
    this.useSeeks(`changing playbackRate ${what}`);
    this.video.muted = true;
  }

  /** @param {string} why */
  useSeeks(why) {
    if (this.mode === 'seek') return;
    this.mode = 'seek';
    this.modeReason = why;
    console.info(`latency: catching up with seeks: ${why}`);
    this.setRate(1);
  }

  /** @param {number} rate */
  setRate(rate) {
    const rounded = Math.round(rate * 100) / 100;
    if (this.video.playbackRate === rounded) return;
    const wasMuted = this.video.muted;
    this.rateChangedAt = performance.now();
    this.video.playbackRate = rounded;
    if (wasMuted && !this.video.muted && this.wantMuted) this.rateHasSideEffects('it unmuted the video');
  }
}

/** The end of the range `time` is in, or null when it is in none. @param {TimeRanges} ranges @param {number} time */
function rangeEnd(ranges, time) {
  for (let i = 0; i < ranges.length; i++) if (time >= ranges.start(i) && time <= ranges.end(i)) return ranges.end(i);
  return null;
}

/**
 * WebKit on Linux that is not Chromium: WebKitGTK and WPE, whose media backend is GStreamer.
 * (Safari, on Apple's backend, says Macintosh, iPhone or iPad.)
 * @param {string} userAgent
 */
export function gstreamerWebKit(userAgent) {
  return /AppleWebKit/.test(userAgent) && /Linux/.test(userAgent) && !/Chrome|Chromium|Android/.test(userAgent);
}
