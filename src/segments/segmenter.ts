import { logger } from '../log.js';
import type { CloseReason, SegmentStats } from '../protocol.js';
import type { BlockEvent, ClusterEvent, StreamSink, VersionedInit } from '../stream/events.js';
import { newEpoch } from './epoch.js';
import { Segment } from './segment.js';

const log = logger('segments');

export interface SegmenterOptions {
  /** Seconds of complete segments kept (`--segment-window`). */
  windowSeconds: number;
  /** Most bytes kept, segment being produced included: older segments go first. */
  maxBytes: number;
  /** Most requests waiting for the next segment at once; beyond, `503` at once. */
  maxParked: number;
  /** A request for the next segment waits at most this many target durations... */
  parkTargetDurations: number;
  /** ...and at least / at most this long (ms). */
  minParkMs: number;
  maxParkMs: number;
}

export const DEFAULT_SEGMENTER_OPTIONS: SegmenterOptions = {
  windowSeconds: 60,
  maxBytes: 256 << 20,
  maxParked: 2000,
  parkTargetDurations: 3,
  minParkMs: 3000,
  maxParkMs: 15_000,
};

/** Why a parked request got no segment. */
export type ParkOutcome = 'timeout' | 'epoch-changed' | 'closed';

interface Parked {
  seq: number;
  start: (segment: Segment) => void;
  giveUp: (why: ParkOutcome) => void;
  timer: NodeJS.Timeout;
}

/** What a segment URL names, at the moment of asking. */
export type SegmentLookup =
  | { kind: 'segment'; segment: Segment }
  /** The one after the segment being produced: wait for it. */
  | { kind: 'next' }
  /** Another epoch, too far ahead, out of the window, or never kept. */
  | { kind: 'none' };

/**
 * The segment sink: cuts the normalized stream at every keyframe cluster into numbered,
 * immutable segments and keeps the last `windowSeconds` of them (bounded in bytes too),
 * the one being produced, and requests waiting for the next one. A sink beside the
 * hub: it never waits for anyone, and a reader costs it only a reference to the Buffers.
 */
export class Segmenter implements StreamSink {
  readonly options: SegmenterOptions;
  private epochToken: string | null = null;
  private currentInit: VersionedInit | null = null;
  private ticksPerSecond = 1000;
  /** Complete segments, oldest first. */
  private readonly complete: Segment[] = [];
  private completeBytes = 0;
  private current: Segment | null = null;
  /** Blocks of the current ingest read, appended to `current` as one Buffer at flush. */
  private pending: Buffer[] = [];
  /** Blocks are skipped until the next keyframe cluster (start, oversized segment). */
  private skipping = true;
  private nextSeq = 0;
  private producerLive = false;
  private readonly parked = new Set<Parked>();
  readonly requests = { index: 0, init: 0, segment: 0, notFound: 0, parkTimeouts: 0, parkRefused: 0 };
  private oversized = 0;
  private closed = false;

  constructor(options: Partial<SegmenterOptions> = {}) {
    this.options = { ...DEFAULT_SEGMENTER_OPTIONS, ...options };
  }

  get epoch(): string | null {
    return this.epochToken;
  }

  /** The init segment the current epoch's segments follow. */
  get init(): VersionedInit | null {
    return this.currentInit;
  }

  get live(): boolean {
    return this.producerLive && this.current !== null;
  }

  get partial(): Segment | null {
    return this.current;
  }

  /** Complete segments in the window, oldest first. */
  get segments(): readonly Segment[] {
    return this.complete;
  }

  seconds(ticks: number): number {
    return Math.round((ticks / this.ticksPerSecond) * 1000) / 1000;
  }

  /** The longest complete segment in the window, in seconds (1 before there is one). */
  get targetDuration(): number {
    let longest = 0;
    for (const s of this.complete) longest = Math.max(longest, s.durationTicks);
    return longest > 0 ? this.seconds(longest) : 1;
  }

  // --- StreamSink -----------------------------------------------------------------

  initChanged(init: VersionedInit): void {
    this.flushPending();
    if (this.current) this.finishCurrent(this.current.lastTicks - this.current.startTicks);
    // The old epoch's URLs are gone: nothing can be served under them any more.
    for (const s of this.complete) s.abandon();
    this.complete.length = 0;
    this.completeBytes = 0;
    this.releaseParked('epoch-changed');
    this.epochToken = newEpoch();
    this.currentInit = init;
    this.ticksPerSecond = 1e9 / init.segment.info.timecodeScale;
    this.skipping = true;
    log.info(`epoch ${this.epochToken}: init segment version ${init.version}, ${init.segment.info.mimeType}`);
  }

  clusterStarted(cluster: ClusterEvent): void {
    if (cluster.keyframe && this.currentInit) {
      this.flushPending();
      if (this.current) this.finishCurrent(cluster.timecode - this.current.startTicks);
      this.startSegment(cluster.timecode, cluster.wallMs);
    }
    if (this.skipping) return;
    this.pending.push(cluster.bytes);
  }

  block(block: BlockEvent): void {
    if (this.skipping || !this.current) return;
    for (const part of block.parts) this.pending.push(part);
    if (block.timecode > this.current.lastTicks) this.current.lastTicks = block.timecode;
  }

  flush(): void {
    this.flushPending();
  }

  producerStarted(): void {
    this.producerLive = true;
  }

  producerEnded(): void {
    this.flushPending();
    // The next producer starts a new segment at its first keyframe; this one ends here.
    if (this.current) this.finishCurrent(this.current.lastTicks - this.current.startTicks);
    this.skipping = true;
    this.producerLive = false;
  }

  close(reason: CloseReason): void {
    this.closed = true;
    this.current?.abandon();
    this.current = null;
    this.releaseParked('closed');
    log.debug(`closed: ${reason}`);
  }

  // --- Lookups for the HTTP handlers ----------------------------------------------

  lookup(epoch: string, seq: number): SegmentLookup {
    if (epoch !== this.epochToken) return { kind: 'none' };
    const current = this.current;
    if (current && seq === current.seq) return { kind: 'segment', segment: current };
    if (seq === this.nextSeq) return { kind: 'next' };
    const first = this.complete[0];
    if (!first || seq < first.seq || seq > this.complete[this.complete.length - 1].seq) return { kind: 'none' };
    // Sequence numbers are consecutive except where an oversized segment was dropped.
    const guess = this.complete[seq - first.seq];
    if (guess?.seq === seq) return { kind: 'segment', segment: guess };
    const found = this.complete.find((s) => s.seq === seq);
    return found ? { kind: 'segment', segment: found } : { kind: 'none' };
  }

  /**
   * Waits for segment `seq` (the next one) to start. Returns a function that cancels
   * the wait (the client went away), or null when too many requests wait already.
   */
  park(seq: number, start: (segment: Segment) => void, giveUp: (why: ParkOutcome) => void): (() => void) | null {
    if (this.parked.size >= this.options.maxParked || this.closed) {
      this.requests.parkRefused++;
      return null;
    }
    const o = this.options;
    const waitMs = Math.min(o.maxParkMs, Math.max(o.minParkMs, this.targetDuration * 1000 * o.parkTargetDurations));
    const entry: Parked = {
      seq,
      start,
      giveUp,
      timer: setTimeout(() => {
        this.parked.delete(entry);
        this.requests.parkTimeouts++;
        giveUp('timeout');
      }, waitMs),
    };
    this.parked.add(entry);
    return () => {
      clearTimeout(entry.timer);
      this.parked.delete(entry);
    };
  }

  get parkedCount(): number {
    return this.parked.size;
  }

  stats(): SegmentStats {
    const perSegment: [number, number][] = this.complete.map((s) => [s.seq, s.requests]);
    if (this.current) perSegment.push([this.current.seq, this.current.requests]);
    return {
      epoch: this.epochToken,
      live: this.live,
      segments: this.complete.length,
      bytes: this.completeBytes + (this.current?.bytes ?? 0) + (this.currentInit?.segment.bytes.length ?? 0),
      parked: this.parked.size,
      partial: this.current?.seq ?? null,
      requests: { ...this.requests },
      perSegment,
      oversized: this.oversized,
    };
  }

  // --- Internals --------------------------------------------------------------------

  private startSegment(timecode: number, wallMs: number): void {
    const segment = new Segment(this.nextSeq++, timecode, wallMs);
    this.current = segment;
    this.skipping = false;
    for (const waiting of [...this.parked]) {
      this.parked.delete(waiting);
      clearTimeout(waiting.timer);
      // A request parked for this number is served from its first byte; any other
      // number was parked under an epoch or numbering that no longer holds.
      if (waiting.seq === segment.seq) waiting.start(segment);
      else waiting.giveUp('epoch-changed');
    }
  }

  private flushPending(): void {
    const current = this.current;
    if (this.pending.length === 0 || !current) {
      this.pending.length = 0;
      return;
    }
    const chunk = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
    this.pending = [];
    if (current.bytes + chunk.length > this.options.maxBytes) {
      this.oversized++;
      log.warn(`segment ${current.seq}: more than ${this.options.maxBytes} bytes without a keyframe; dropped, waiting for the next keyframe`);
      current.abandon();
      this.current = null;
      this.skipping = true;
      return;
    }
    current.append(chunk);
    this.trim();
  }

  private finishCurrent(durationTicks: number): void {
    const segment = this.current!;
    this.current = null;
    segment.finish(durationTicks);
    this.complete.push(segment);
    this.completeBytes += segment.bytes;
    this.trim();
  }

  /** Drops the oldest complete segments beyond the window in time or in bytes. */
  private trim(): void {
    const complete = this.complete;
    if (complete.length === 0) return;
    const newest = complete[complete.length - 1];
    const end = newest.startTicks + newest.durationTicks;
    const windowTicks = this.options.windowSeconds * this.ticksPerSecond;
    const held = () => this.completeBytes + (this.current?.bytes ?? 0);
    while (complete.length > 0 && (end - (complete[0].startTicks + complete[0].durationTicks) >= windowTicks || held() > this.options.maxBytes)) {
      const dropped = complete.shift()!;
      this.completeBytes -= dropped.bytes;
    }
  }

  private releaseParked(why: ParkOutcome): void {
    for (const waiting of this.parked) {
      clearTimeout(waiting.timer);
      waiting.giveUp(why);
    }
    this.parked.clear();
  }
}
