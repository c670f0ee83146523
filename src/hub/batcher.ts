import type { BlockEvent, ClusterEvent } from '../stream/events.js';
import type { ViewersByTransport } from './viewers.js';

/** A run of media bytes as it goes to every viewer. */
export interface MediaChunk {
  /** What a viewer that is live gets. */
  data: Buffer;
  /**
   * The end of `data` from a keyframe cluster on (`data` itself when that is where it
   * starts), or null: where a viewer may join or resume.
   */
  fromKeyframe: Buffer | null;
}

/**
 * Joins a chunk's parts into the one Buffer every viewer is sent. The relay's joins
 * put it inside the framing of the transport most of the stream's viewers use (see
 * server/transports.ts), so those viewers are sent a view of the same memory rather
 * than a framed copy.
 */
export type ChunkJoiner = (parts: readonly Buffer[], length: number, viewers: ViewersByTransport) => Buffer;

/** Joins without framing: for a hub whose viewers frame each chunk themselves. */
export const concatChunk = (parts: readonly Buffer[], length: number): Buffer => Buffer.concat(parts as Buffer[], length);

/**
 * Gathers the stream's clusters and blocks into chunks, each joined once into one
 * Buffer that every viewer is then sent: one write per viewer per chunk, whatever
 * the number of blocks in it.
 *
 * Coalescing policy: a chunk goes out at the end of an ingest read once it holds a
 * video block (or the stream has no video). Media without one (audio packets) waits
 * at most `coalesceMs` for the next video frame and leaves in its write: one write
 * per viewer per frame instead of one per frame and one per audio packet. A keyframe
 * cluster never waits and never shares a chunk with a second one, so a joiner starting
 * at `fromKeyframe` gets whole GOPs.
 */
export class Batcher {
  private parts: Buffer[] = [];
  /** Index in `parts` of the keyframe cluster's first part, or -1. */
  private keyframeAt = -1;
  /** The batch holds a video block (or the stream has no video): it goes out at the next flush. */
  private ready = false;
  private hasVideo = true;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly coalesceMs: number,
    private readonly emit: (chunk: MediaChunk) => void,
    private readonly join: (parts: readonly Buffer[], length: number) => Buffer = concatChunk,
  ) {}

  /** Whether the stream has video (set with each init segment). */
  setHasVideo(hasVideo: boolean): void {
    this.hasVideo = hasVideo;
  }

  cluster(cluster: ClusterEvent): void {
    // Media still waiting (audio held for the next video frame) goes out in the same
    // write as the keyframe: a round of writes of its own first would delay the
    // keyframe by a whole fan-out.
    if (cluster.keyframe) {
      if (this.keyframeAt >= 0) this.sendNow();
      this.keyframeAt = this.parts.length;
    }
    this.parts.push(cluster.bytes);
  }

  block(block: BlockEvent): void {
    for (const part of block.parts) this.parts.push(part);
    if (block.video || !this.hasVideo) this.ready = true;
  }

  /** The end of an ingest read. */
  flush(): void {
    if (this.parts.length === 0) return;
    if (this.ready || this.coalesceMs <= 0) return this.sendNow();
    if (!this.timer) {
      this.timer = setTimeout(this.expired, this.coalesceMs);
      this.timer.unref();
    }
  }

  private readonly expired = () => {
    this.timer = null;
    this.sendNow();
  };

  /** Sends what has gathered now, whatever it holds. */
  sendNow(): void {
    this.cancelTimer();
    this.ready = false;
    if (this.parts.length === 0) return;
    let length = 0;
    let offset = 0;
    for (let i = 0; i < this.parts.length; i++) {
      if (i === this.keyframeAt) offset = length;
      length += this.parts[i].length;
    }
    const data = this.join(this.parts, length);
    let fromKeyframe: Buffer | null = null;
    if (this.keyframeAt >= 0) fromKeyframe = offset === 0 ? data : data.subarray(offset);
    this.parts = [];
    this.keyframeAt = -1;
    this.emit({ data, fromKeyframe });
  }

  close(): void {
    this.cancelTimer();
    this.parts = [];
    this.keyframeAt = -1;
  }

  private cancelTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
