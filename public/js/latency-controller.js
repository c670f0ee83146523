// Latency controller: holds the playhead near the live edge (after hls.js's latency-controller).
// lag = end of what is buffered - currentTime. A little above the target, play slightly
// faster (never more than maxRate, so nobody hears it); far behind (a background tab,
// a stall), jump; in a hole of `buffered`, skip to the next range.

const DEFAULTS = {
  /** Seconds behind the live edge we aim for. */
  targetLatency: 0.3,
  /** Lag beyond which we seek instead of speeding up. */
  maxLatency: 2,
  /** Highest playbackRate used to catch up. */
  maxRate: 1.1,
  /** Lag within this of the target is left alone (no rate hunting). */
  tolerance: 0.05,
  /** Lag above the target at which the rate reaches maxRate. */
  rampSeconds: 0.3,
  /**
   * Just after a start the rest of the relay's GOP may still be arriving: for this long,
   * a lag beyond target + startSlack is cut with a seek (the viewer barely saw anything yet).
   */
  startWindowMs: 3000,
  startSlack: 0.3,
  /**
   * A seek that has not completed after this long, with the live edge more than maxLatency
   * ahead, is given up for the live edge: a seek into a scrap of buffer between two holes
   * (where an overloaded encoder dropped frames) can wait for data that never comes, and the
   * picture would stay frozen for good. Doubles after each give-up (a slow machine's seeks
   * are slow, not stuck), back to this once a seek completes.
   */
  maxSeekMs: 1500,
};

export class LatencyController {
  /** @param {HTMLVideoElement} video @param {Partial<typeof DEFAULTS>} options */
  constructor(video, options = {}) {
    this.video = video;
    this.options = { ...DEFAULTS, ...options };
    this.jumps = 0;
    this.gapJumps = 0;
    this.startedAt = -Infinity;
    /** currentTime at the previous tick: unchanged while playing means stuck. */
    this.lastTime = -1;
    /** When the seek in progress was first seen, or null. */
    this.seekingSince = null;
    this.seekPatienceMs = this.options.maxSeekMs;
  }

  /** Playback (re)started now: see startWindowMs. */
  started() {
    this.startedAt = performance.now();
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
    return Math.max(ranges.start(last), ranges.end(last) - this.options.targetLatency);
  }

  /** Call often (timeupdate, a timer, when the tab becomes visible). */
  tick() {
    const video = this.video;
    const ranges = video.buffered;
    if (ranges.length === 0) return;
    const now = video.currentTime;
    const { targetLatency, maxLatency, maxRate, tolerance, rampSeconds } = this.options;
    if (video.seeking) {
      const since = (this.seekingSince ??= performance.now());
      const edge = Math.max(ranges.start(ranges.length - 1), ranges.end(ranges.length - 1) - targetLatency);
      if (performance.now() - since < this.seekPatienceMs || edge - now < maxLatency) return;
      this.seekingSince = null;
      this.seekPatienceMs = Math.min(this.seekPatienceMs * 2, 12_000);
      this.jumps++;
      this.setRate(1);
      video.currentTime = edge;
      return;
    }
    if (this.seekingSince !== null) this.seekPatienceMs = this.options.maxSeekMs;
    this.seekingSince = null;

    // In a hole, before the first range, or stuck at the end of a range with more after it:
    // go to the next range that starts ahead.
    const stuck = !video.paused && (now === this.lastTime || video.readyState < HTMLMediaElement.HAVE_FUTURE_DATA);
    this.lastTime = now;
    const end = rangeEnd(ranges, now);
    if (end === null || (stuck && end - now < 0.1)) {
      for (let i = 0; i < ranges.length; i++) {
        if (ranges.start(i) > now) {
          this.gapJumps++;
          video.currentTime = ranges.start(i) + 0.001;
          return;
        }
      }
    }

    const lag = this.lag;
    const starting = performance.now() - this.startedAt < this.options.startWindowMs;
    if (lag > maxLatency || (starting && lag > targetLatency + this.options.startSlack)) {
      this.jumps++;
      this.setRate(1);
      video.currentTime = Math.max(ranges.start(ranges.length - 1), ranges.end(ranges.length - 1) - targetLatency);
      return;
    }
    const excess = lag - targetLatency;
    if (excess > tolerance) this.setRate(Math.min(maxRate, 1 + ((maxRate - 1) * excess) / rampSeconds));
    else if (excess <= 0) this.setRate(1);
  }

  /** @param {number} rate */
  setRate(rate) {
    const rounded = Math.round(rate * 100) / 100;
    if (this.video.playbackRate !== rounded) this.video.playbackRate = rounded;
  }
}

/** The end of the range `time` is in, or null when it is in none. @param {TimeRanges} ranges @param {number} time */
function rangeEnd(ranges, time) {
  for (let i = 0; i < ranges.length; i++) if (time >= ranges.start(i) && time <= ranges.end(i)) return ranges.end(i);
  return null;
}
