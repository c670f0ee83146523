import type { StreamPacing } from '../protocol.js';

/** The largest value of each of the last `seconds` seconds, in as many slots. */
class WindowMax {
  private readonly values: number[];
  private readonly stamps: number[];

  constructor(private readonly seconds: number) {
    this.values = new Array<number>(seconds).fill(0);
    this.stamps = new Array<number>(seconds).fill(-1);
  }

  add(value: number, nowMs: number): void {
    const second = Math.floor(nowMs / 1000);
    const slot = second % this.seconds;
    if (this.stamps[slot] !== second) {
      this.stamps[slot] = second;
      this.values[slot] = value;
    } else if (value > this.values[slot]) this.values[slot] = value;
  }

  /** The values of the seconds in the window that had one. */
  private recent(nowMs: number): number[] {
    const oldest = Math.floor(nowMs / 1000) - this.seconds;
    const values: number[] = [];
    for (let i = 0; i < this.seconds; i++) if (this.stamps[i] > oldest) values.push(this.values[i]);
    return values;
  }

  /** The upper quartile of the seconds' maxima: three seconds in four were no worse. */
  upperQuartile(nowMs: number): number {
    const values = this.recent(nowMs).sort((a, b) => a - b);
    return values.length === 0 ? 0 : values[Math.floor((values.length - 1) * 0.75)];
  }
}

/**
 * How the stream's video has been reaching viewers over the last 20 s: a bad second's
 * longest wait between two sends that carried video, and its longest interval between two
 * video frames (each the upper quartile of the seconds' maxima: one second in which a busy
 * encoder stood still is not the stream's pace, a second-long burst every second or a
 * screen capture's many long intervals are). A producer that writes whole clusters at
 * once (ffmpeg's WebM muxer), one that sends frames only when the picture changes (a
 * screen capture, a browser's MediaRecorder) or a starved encoder make both long; a player told so when it joins
 * starts far enough behind live that the next wait does not run its buffer dry, instead
 * of learning it from a stall (see public/js/latency-controller.js).
 */
export class Pacing {
  private readonly waits = new WindowMax(20);
  private readonly frames = new WindowMax(20);
  private lastVideoSendAt = -1;
  private lastFrameTicks = -1;
  private videoSinceSend = false;
  private msPerTick = 1;

  constructor(private readonly now: () => number = Date.now) {}

  /** A new init segment or producer: timestamps and sends start over. */
  restart(timecodeScaleNs?: number): void {
    if (timecodeScaleNs) this.msPerTick = timecodeScaleNs / 1e6;
    this.lastVideoSendAt = -1;
    this.lastFrameTicks = -1;
    this.videoSinceSend = false;
  }

  /** A video frame with this absolute timecode (ticks). */
  videoFrame(ticks: number): void {
    const interval = (ticks - this.lastFrameTicks) * this.msPerTick;
    // Over 5 s is a gap in the producer, not its frame rate.
    if (this.lastFrameTicks >= 0 && interval > 0 && interval <= 5000) this.frames.add(interval, this.now());
    this.lastFrameTicks = ticks;
    this.videoSinceSend = true;
  }

  /** The end of an ingest read: what came since goes to viewers now. */
  sent(): void {
    if (!this.videoSinceSend) return;
    this.videoSinceSend = false;
    const now = this.now();
    if (this.lastVideoSendAt >= 0) this.waits.add(now - this.lastVideoSendAt, now);
    this.lastVideoSendAt = now;
  }

  get current(): StreamPacing {
    const now = this.now();
    return { waitMs: Math.round(this.waits.upperQuartile(now)), frameIntervalMs: Math.round(this.frames.upperQuartile(now)) };
  }
}
