import type { ServerResponse } from 'node:http';

/**
 * One segment: a keyframe cluster and every block up to the next keyframe cluster,
 * kept as the Buffers gathered per ingest read (one per flush, shared with nobody and
 * never modified). While it is being produced, readers are sent each new Buffer as
 * it arrives; when it completes, their responses end.
 */
export class Segment {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  complete = false;
  /** Ticks from this segment's start to the next one's (set when complete). */
  durationTicks = 0;
  /** Latest block timestamp seen, in ticks: the end when no next segment follows. */
  lastTicks: number;
  /** Origin requests for this segment's URL: a cache in front should make this one. */
  requests = 0;
  /** When its keyframe cluster came in (ms since the epoch): where delivery latency starts. */
  readonly startedAt = Date.now();
  private readonly readers = new Set<ServerResponse>();

  constructor(
    readonly seq: number,
    readonly startTicks: number,
    /** Wall-clock time of its start (ms since 1970, UTC), on the producer's clock: see StreamClock. */
    readonly startMs: number,
  ) {
    this.lastTicks = startTicks;
  }

  get readerCount(): number {
    return this.readers.size;
  }

  append(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    for (const res of this.readers) res.write(chunk);
  }

  /** Sends what exists so far and then the rest as it arrives; ends with the segment. */
  addReader(res: ServerResponse): void {
    // One writev for what exists so far, however many reads it was gathered from.
    res.cork();
    for (const chunk of this.chunks) res.write(chunk);
    res.uncork();
    if (this.complete) {
      res.end();
      return;
    }
    this.readers.add(res);
    res.once('close', () => this.readers.delete(res));
  }

  finish(durationTicks: number): void {
    this.complete = true;
    this.durationTicks = Math.max(0, durationTicks);
    for (const res of this.readers) res.end();
    this.readers.clear();
  }

  /**
   * The segment will never be whole (too large, stream closed): readers' connections
   * are cut rather than ended, so no cache stores a truncated object as complete.
   */
  abandon(): void {
    for (const res of this.readers) res.destroy();
    this.readers.clear();
    this.chunks.length = 0;
    this.bytes = 0;
  }
}
