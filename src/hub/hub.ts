import type { InitSegment } from '../normalizer/init-segment.js';
import type { NormalizedStream } from '../normalizer/normalizer.js';
import { KeepAlive } from './keepalive.js';

/** Where a new viewer starts (compare GStreamer multihandlesink's `sync-method`). */
export type JoinPolicy =
  /** At the latest keyframe cluster: the picture appears at once, a GOP behind live. */
  | 'latest-keyframe'
  /** At the next keyframe cluster: up to a GOP's wait, then live with no backlog. */
  | 'next-keyframe';

export interface HubOptions {
  join: JoinPolicy;
  maxViewers: number;
  /**
   * Slow-viewer policy: a viewer with more than this many bytes not yet taken by its
   * socket stops receiving, and resumes at the next keyframe cluster once drained.
   */
  maxQueueBytes: number;
  /** A viewer whose socket has taken nothing for this long while data waits is disconnected. */
  stallTimeoutMs: number;
  /** After the producer goes away, how long viewers are kept for the next one. */
  producerGraceMs: number;
  /**
   * In a stream with video, media that holds no video block (audio packets) waits at most
   * this long for the next video frame and goes out with it: one socket write per viewer
   * per frame instead of one per frame and one per audio packet. 0 sends at once.
   */
  coalesceMs: number;
  /**
   * Most bytes of the current GOP kept for joining viewers. A producer that sends no
   * keyframe for long would otherwise grow it without end; past this, joiners wait
   * for the next keyframe, as with `next-keyframe`.
   */
  maxGopBytes: number;
}

export const DEFAULT_HUB_OPTIONS: HubOptions = {
  join: 'latest-keyframe',
  maxViewers: 1000,
  maxQueueBytes: 4 << 20,
  stallTimeoutMs: 10_000,
  producerGraceMs: 30_000,
  coalesceMs: 40,
  maxGopBytes: 32 << 20,
};

/** A viewer's connection, as the hub sees it. */
export interface ViewerTransport {
  readonly kind: 'http' | 'ws';
  /** Queues bytes for the viewer, in order. */
  send(data: Buffer): void;
  /** Bytes queued but not yet taken by the kernel. */
  readonly pendingBytes: number;
  /**
   * Sends an init segment. `replacing`: the viewer already has one and the stream
   * changed tracks; returns false when the transport cannot start over (HTTP).
   */
  sendInit(init: InitSegment, replacing: boolean): boolean;
  /** Bytes that carry no media and keep proxies from timing out an idle connection (see keepalive.ts). */
  keepAlive(): void;
  close(reason: string): void;
}

/** A run of media bytes as it goes to every viewer. */
interface MediaChunk {
  /** What a viewer that is live gets. */
  data: Buffer;
  /**
   * The end of `data` from a keyframe cluster on (`data` itself when that is where it
   * starts), or null: where a viewer may join or resume.
   */
  fromKeyframe: Buffer | null;
}

const enum ViewerState {
  /** Sent every chunk. */
  Live,
  /** Joining or behind: waits for the next keyframe cluster. */
  AwaitKeyframe,
}

export interface Viewer {
  readonly transport: ViewerTransport;
  state: ViewerState;
  hasInit: boolean;
  sentBytes: number;
  /** Last time the socket took bytes, or had nothing waiting. */
  lastProgress: number;
  lastPending: number;
}

export interface HubStats {
  /** Connections that have taken media (not just the header). */
  viewers: number;
  /** Every open viewer connection, probes included: what --max-viewers limits. */
  connections: number;
  viewersByTransport: Record<ViewerTransport['kind'], number>;
  live: boolean;
  /** Bits per second of media over the last few seconds. */
  bitrate: number;
  clusters: number;
  keyframeClusters: number;
  bytesOut: number;
  joins: number;
  rejected: number;
  skips: number;
  stallDisconnects: number;
  initSegments: number;
}

/**
 * Holds the init segment and the current GOP and fans each chunk of the normalized
 * stream out to every viewer. Media is gathered while one ingest read is processed
 * (and, in a stream with video, until a video block is in: see `coalesceMs`) and
 * joined once into a chunk: every viewer then gets that same Buffer, one write per
 * viewer per chunk, whatever the number of blocks in it.
 */
export class Hub implements NormalizedStream {
  readonly options: HubOptions;
  private current: InitSegment | null = null;
  /** The current GOP as sent, from its keyframe cluster on: what a joining viewer gets first. */
  private gop: Buffer[] = [];
  private gopBytes = 0;
  private watchingCount = 0;
  private watchingCountedAt = 0;
  private batch: Buffer[] = [];
  /** Index in `batch` of the keyframe cluster's first part, or -1. */
  private batchKeyframeAt = -1;
  /** The batch holds a video block (or the stream has no video): it goes out at the next flush. */
  private batchReady = false;
  private videoTracks = new Set<number>();
  private coalesceTimer: NodeJS.Timeout | null = null;
  private readonly viewers = new Set<Viewer>();
  private producerLive = false;
  private graceTimer: NodeJS.Timeout | null = null;
  private readonly stallTimer: NodeJS.Timeout;
  private readonly keepAlive = new KeepAlive(() => this.viewers);
  private readonly rate = new RateMeter();
  private readonly counters = { clusters: 0, keyframeClusters: 0, bytesOut: 0, joins: 0, rejected: 0, skips: 0, stallDisconnects: 0, initSegments: 0 };

  constructor(options: Partial<HubOptions> = {}) {
    this.options = { ...DEFAULT_HUB_OPTIONS, ...options };
    this.stallTimer = setInterval(() => this.checkStalls(), Math.min(1000, this.options.stallTimeoutMs / 4));
    this.stallTimer.unref();
  }

  get initSegment(): InitSegment | null {
    return this.current;
  }

  get live(): boolean {
    return this.producerLive && this.current !== null;
  }

  // --- the normalized stream comes in -------------------------------------------

  init(init: InitSegment): void {
    this.sendBatch();
    this.current = init;
    this.videoTracks = new Set(init.info.tracks.filter((t) => t.kind === 'video').map((t) => t.number));
    this.clearGop();
    this.counters.initSegments++;
    for (const viewer of this.viewers) {
      if (!viewer.hasInit) continue;
      if (viewer.transport.sendInit(init, true)) viewer.state = ViewerState.AwaitKeyframe;
      else this.remove(viewer, 'the stream changed tracks');
    }
  }

  cluster(bytes: Buffer, _timecode: number, keyframe: boolean): void {
    this.counters.clusters++;
    if (keyframe) {
      this.counters.keyframeClusters++;
      // Media still waiting (audio held for the next video frame) goes out in the same
      // write as the keyframe: a second round of writes first would delay the keyframe
      // by a whole fan-out. Only one keyframe per chunk, so a joiner gets a whole GOP.
      if (this.batchKeyframeAt >= 0) this.sendBatch();
      this.batchKeyframeAt = this.batch.length;
    }
    this.batch.push(bytes);
  }

  block(parts: Buffer[], track?: number): void {
    for (const part of parts) this.batch.push(part);
    if (track === undefined || this.videoTracks.size === 0 || this.videoTracks.has(track)) this.batchReady = true;
  }

  /**
   * Sends what has gathered since the last flush: call after each ingest read. Media
   * without a video block may wait up to `coalesceMs` for the next video frame.
   */
  flush(): void {
    if (this.batch.length === 0) return;
    if (this.batchReady || this.options.coalesceMs <= 0) return this.sendBatch();
    if (!this.coalesceTimer) {
      this.coalesceTimer = setTimeout(this.coalesced, this.options.coalesceMs);
      this.coalesceTimer.unref();
    }
  }

  private readonly coalesced = () => {
    this.coalesceTimer = null;
    this.sendBatch();
  };

  /** Sends the batch now, whatever it holds. */
  private sendBatch(): void {
    if (this.coalesceTimer) {
      clearTimeout(this.coalesceTimer);
      this.coalesceTimer = null;
    }
    this.batchReady = false;
    if (this.batch.length === 0) return;
    const data = Buffer.concat(this.batch);
    let fromKeyframe: Buffer | null = null;
    if (this.batchKeyframeAt >= 0) {
      let offset = 0;
      for (let i = 0; i < this.batchKeyframeAt; i++) offset += this.batch[i].length;
      fromKeyframe = offset === 0 ? data : data.subarray(offset);
    }
    const chunk: MediaChunk = { data, fromKeyframe };
    this.batch = [];
    this.batchKeyframeAt = -1;
    if (fromKeyframe) {
      this.clearGop();
      this.keepForJoiners(fromKeyframe);
    } else if (this.gop.length > 0) {
      // Before the first keyframe there is nothing a viewer could start with.
      this.keepForJoiners(data);
    }
    this.rate.add(chunk.data.length);
    for (const viewer of this.viewers) this.deliver(viewer, chunk);
  }

  producerStarted(): void {
    this.producerLive = true;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
  }

  /** The producer is gone: keep viewers for the grace period, then let them go. */
  producerEnded(): void {
    this.sendBatch();
    this.producerLive = false;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = setTimeout(() => {
      this.graceTimer = null;
      this.current = null;
      this.clearGop();
      for (const viewer of this.viewers) this.remove(viewer, 'no producer');
    }, this.options.producerGraceMs);
    this.graceTimer.unref();
  }

  private keepForJoiners(data: Buffer): void {
    this.gop.push(data);
    this.gopBytes += data.length;
    if (this.gopBytes > this.options.maxGopBytes) this.clearGop();
  }

  private clearGop(): void {
    this.gop = [];
    this.gopBytes = 0;
  }

  // --- viewers ------------------------------------------------------------------

  /** Whether one more viewer may join. */
  get full(): boolean {
    return this.viewers.size >= this.options.maxViewers;
  }

  /** Adds a viewer, or returns null (and counts a rejection) when the hub is full. */
  add(transport: ViewerTransport): Viewer | null {
    if (this.full) {
      this.counters.rejected++;
      return null;
    }
    const now = Date.now();
    const viewer: Viewer = { transport, state: ViewerState.AwaitKeyframe, hasInit: false, sentBytes: 0, lastProgress: now, lastPending: 0 };
    this.viewers.add(viewer);
    this.counters.joins++;
    if (this.current) {
      viewer.hasInit = transport.sendInit(this.current, false);
      if (this.options.join === 'latest-keyframe' && this.gop.length > 0) {
        viewer.state = ViewerState.Live;
        for (const data of this.gop) this.send(viewer, data);
      }
    }
    return viewer;
  }

  remove(viewer: Viewer, reason?: string): void {
    if (!this.viewers.delete(viewer)) return;
    if (reason) viewer.transport.close(reason);
  }

  private deliver(viewer: Viewer, chunk: MediaChunk): void {
    const pending = viewer.transport.pendingBytes;
    if (viewer.state === ViewerState.AwaitKeyframe) {
      if (!chunk.fromKeyframe || pending > this.options.maxQueueBytes / 2) return;
      if (!viewer.hasInit) viewer.hasInit = viewer.transport.sendInit(this.current!, false);
      viewer.state = ViewerState.Live;
      this.send(viewer, chunk.fromKeyframe);
    } else if (pending > this.options.maxQueueBytes) {
      viewer.state = ViewerState.AwaitKeyframe;
      this.counters.skips++;
    } else {
      this.send(viewer, chunk.data);
    }
  }

  private send(viewer: Viewer, data: Buffer): void {
    viewer.sentBytes += data.length;
    this.counters.bytesOut += data.length;
    viewer.transport.send(data);
  }

  private checkStalls(): void {
    const now = Date.now();
    for (const viewer of this.viewers) {
      const pending = viewer.transport.pendingBytes;
      if (pending === 0 || pending < viewer.lastPending) viewer.lastProgress = now;
      viewer.lastPending = pending;
      if (now - viewer.lastProgress > this.options.stallTimeoutMs) {
        this.counters.stallDisconnects++;
        this.remove(viewer, `stalled: took nothing for ${this.options.stallTimeoutMs} ms`);
      }
    }
  }

  /**
   * Browsers open and drop probe requests on <video src>: a connection counts as a
   * viewer once its socket has taken media, more than the init segment.
   */
  private countViewers(): Record<ViewerTransport['kind'], number> {
    const byTransport = { http: 0, ws: 0 };
    for (const viewer of this.viewers) {
      if (viewer.sentBytes > viewer.transport.pendingBytes) byTransport[viewer.transport.kind]++;
    }
    return byTransport;
  }

  /**
   * Viewers watching, recounted at most once a second: every player asks for it every
   * few seconds, and an exact count each time would cost viewers² per round.
   */
  get watching(): number {
    const now = Date.now();
    if (now - this.watchingCountedAt >= 1000) {
      const { http, ws } = this.countViewers();
      this.watchingCount = http + ws;
      this.watchingCountedAt = now;
    }
    return this.watchingCount;
  }

  stats(): HubStats {
    const byTransport = this.countViewers();
    return {
      viewers: byTransport.http + byTransport.ws,
      connections: this.viewers.size,
      viewersByTransport: byTransport,
      live: this.live,
      bitrate: Math.round(this.rate.perSecond() * 8),
      ...this.counters,
    };
  }

  close(reason: string): void {
    clearInterval(this.stallTimer);
    this.keepAlive.close();
    if (this.coalesceTimer) clearTimeout(this.coalesceTimer);
    this.coalesceTimer = null;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    for (const viewer of this.viewers) this.remove(viewer, reason);
  }
}

/** Bytes per second over a sliding window of whole seconds. */
class RateMeter {
  private readonly buckets = new Float64Array(5);
  private second = 0;

  add(bytes: number): void {
    this.advance();
    this.buckets[this.second % this.buckets.length] += bytes;
  }

  perSecond(): number {
    this.advance();
    let sum = 0;
    // Leave out the second still filling.
    for (let i = 1; i < this.buckets.length; i++) sum += this.buckets[(this.second - i + this.buckets.length) % this.buckets.length];
    return sum / (this.buckets.length - 1);
  }

  private advance(): void {
    const now = Math.floor(Date.now() / 1000);
    if (this.second === 0) this.second = now;
    if (now - this.second >= this.buckets.length) this.buckets.fill(0);
    else for (let s = this.second + 1; s <= now; s++) this.buckets[s % this.buckets.length] = 0;
    this.second = now;
  }
}
