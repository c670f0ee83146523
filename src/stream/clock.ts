/** A stream time this far from the wall clock is not a delay but a producer running apart: placed anew. */
const REANCHOR_MS = 2000;

/**
 * Where a stream's time meets the wall clock. A producer's first keyframe is placed when
 * it arrived; every later cluster is placed from its timecode, not from its own arrival,
 * which would carry the jitter of the encoder, the network and this process. The Stream
 * places each cluster once and every sink (segments, recordings) uses that time, so a
 * segment in memory and a file on disk tell the same time for the same frame, and files
 * cut one after another join without a gap or an overlap.
 */
export class StreamClock {
  private anchor: { ms: number; ticks: number } | null = null;
  private ticksPerSecond = 1000;

  /** A new timeline: a new producer, or new tracks with their own timecode scale. */
  restart(timecodeScale?: number): void {
    this.anchor = null;
    if (timecodeScale !== undefined) this.ticksPerSecond = 1e9 / timecodeScale;
  }

  /**
   * The wall-clock time (ms since 1970, UTC) of a cluster starting at `ticks`. A keyframe
   * cluster re-anchors the clock when there is none yet, or when the producer's timestamps
   * have drifted from ours by more than REANCHOR_MS (a gap they do not show).
   */
  place(ticks: number, keyframe: boolean, nowMs = Date.now()): number {
    if (keyframe && (!this.anchor || Math.abs(this.at(ticks, nowMs) - nowMs) > REANCHOR_MS)) this.anchor = { ms: nowMs, ticks };
    return Math.round(this.at(ticks, nowMs));
  }

  private at(ticks: number, nowMs: number): number {
    const anchor = this.anchor;
    return anchor ? anchor.ms + ((ticks - anchor.ticks) / this.ticksPerSecond) * 1000 : nowMs;
  }
}
