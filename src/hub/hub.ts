import { DEFAULT_LIMITS } from '../config/options.js';
import type { CloseReason, StreamStats } from '../protocol.js';
import type { BlockEvent, ClusterEvent, StreamSink, VersionedInit } from '../stream/events.js';
import { Batcher, concatChunk, type ChunkJoiner, type MediaChunk } from './batcher.js';
import { GopCache } from './gop-cache.js';
import { KeepAlive } from './keepalive.js';
import { Pacing } from './pacing.js';
import { RateMeter } from './rate-meter.js';
import { ViewerBudget, ViewerSet, type Viewer, type ViewerCounters, type ViewerPolicy, type ViewerTransport } from './viewers.js';

export type { Viewer, ViewerTransport } from './viewers.js';

export interface HubOptions extends ViewerPolicy {
  /** After the producer goes away, how long viewers are kept for the next one. */
  producerGraceMs: number;
  /** How long media without a video block may wait for the next video frame (see Batcher). 0 sends at once. */
  coalesceMs: number;
  /** Most bytes of the current GOP kept for joining viewers (see GopCache). */
  maxGopBytes: number;
  /** How a chunk's parts become the Buffer every viewer is sent (see ChunkJoiner). */
  joinChunk: ChunkJoiner;
}

export const DEFAULT_HUB_OPTIONS: HubOptions = {
  join: DEFAULT_LIMITS.join,
  recover: DEFAULT_LIMITS.recover,
  maxViewers: DEFAULT_LIMITS.maxViewers,
  maxQueueBytes: DEFAULT_LIMITS.maxQueueBytes,
  stallTimeoutMs: DEFAULT_LIMITS.stallTimeoutMs,
  producerGraceMs: DEFAULT_LIMITS.producerGraceMs,
  coalesceMs: 40,
  maxGopBytes: 32 << 20,
  joinChunk: concatChunk,
};

/** What the hub knows of a stream's stats (src/protocol.ts defines them). */
export type HubStats = Pick<
  StreamStats,
  'viewers' | 'connections' | 'viewersByTransport' | 'live' | 'bitrate' | 'clusters' | 'keyframeClusters' | 'initSegments' | keyof ViewerCounters
>;

/**
 * The viewers' sink of a stream: holds the init segment, gathers the stream into
 * chunks (Batcher), keeps the current GOP for joiners (GopCache) and hands each chunk
 * to every viewer (ViewerSet). The same Buffer goes to every viewer.
 */
export class Hub implements StreamSink {
  readonly options: HubOptions;
  private current: VersionedInit | null = null;
  private readonly gop: GopCache;
  private readonly batcher: Batcher;
  readonly viewers: ViewerSet;
  private producerLive = false;
  private graceTimer: NodeJS.Timeout | null = null;
  private readonly rate = new RateMeter();
  private watchingCount = 0;
  private watchingCountedAt = 0;
  private readonly counters = { clusters: 0, keyframeClusters: 0, initSegments: 0 };
  private readonly keepAlive = new KeepAlive(() => this.viewers);
  /** How video reaches viewers lately: told to each joining player. */
  readonly pacing = new Pacing();

  constructor(options: Partial<HubOptions> = {}, budget = new ViewerBudget(Infinity)) {
    this.options = { ...DEFAULT_HUB_OPTIONS, ...options };
    this.gop = new GopCache(this.options.maxGopBytes);
    this.viewers = new ViewerSet(this.options, budget);
    const join = this.options.joinChunk;
    this.batcher = new Batcher(this.options.coalesceMs, (chunk) => this.fanOut(chunk), (parts, length) => join(parts, length, this.viewers.byTransport));
  }

  get initSegment(): VersionedInit | null {
    return this.current;
  }

  get live(): boolean {
    return this.producerLive && this.current !== null;
  }

  // --- the stream comes in --------------------------------------------------------

  initChanged(init: VersionedInit): void {
    this.batcher.sendNow();
    this.current = init;
    this.pacing.restart(init.segment.info.timecodeScale);
    this.batcher.setHasVideo(init.segment.info.tracks.some((t) => t.kind === 'video'));
    this.gop.clear();
    this.counters.initSegments++;
    this.viewers.initChanged(init);
  }

  clusterStarted(cluster: ClusterEvent): void {
    this.counters.clusters++;
    if (cluster.keyframe) this.counters.keyframeClusters++;
    this.batcher.cluster(cluster);
  }

  block(block: BlockEvent): void {
    if (block.video) this.pacing.videoFrame(block.timecode);
    this.batcher.block(block);
  }

  flush(): void {
    this.batcher.flush();
    this.pacing.sent();
  }

  private fanOut(chunk: MediaChunk): void {
    if (chunk.fromKeyframe) this.gop.startGop(chunk.fromKeyframe);
    else this.gop.append(chunk.data);
    this.rate.add(chunk.data.length);
    this.viewers.deliver(chunk, this.current!);
  }

  producerStarted(): void {
    this.producerLive = true;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
  }

  /** The producer is gone: keep viewers for the grace period, then let them go. */
  producerEnded(): void {
    this.batcher.sendNow();
    this.pacing.restart();
    this.producerLive = false;
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = setTimeout(() => {
      this.graceTimer = null;
      // The init segment stays: a next producer with the same tracks continues the
      // stream without a new one (the normalizer sends none), and viewers joining
      // meanwhile get it and wait for that producer's first keyframe.
      this.gop.clear();
      this.viewers.closeAll('noProducer');
    }, this.options.producerGraceMs);
    this.graceTimer.unref();
  }

  // --- viewers ------------------------------------------------------------------

  get full(): boolean {
    return this.viewers.full;
  }

  /** Adds a viewer, or returns null (and counts a rejection) when the stream or the relay is full. */
  add(transport: ViewerTransport): Viewer | null {
    return this.viewers.add(transport, this.current, this.gop.contents);
  }

  remove(viewer: Viewer, reason?: CloseReason): void {
    this.viewers.remove(viewer, reason);
  }

  /**
   * Viewers watching, recounted at most once a second: every player asks for it every
   * few seconds, and an exact count each time would cost viewers² per round.
   */
  get watching(): number {
    const now = Date.now();
    if (now - this.watchingCountedAt >= 1000) {
      const { http, ws } = this.viewers.countWatching();
      this.watchingCount = http + ws;
      this.watchingCountedAt = now;
    }
    return this.watchingCount;
  }

  stats(): HubStats {
    const byTransport = this.viewers.countWatching();
    return {
      viewers: byTransport.http + byTransport.ws,
      connections: this.viewers.size,
      viewersByTransport: byTransport,
      live: this.live,
      bitrate: Math.round(this.rate.perSecond() * 8),
      ...this.counters,
      ...this.viewers.counters,
    };
  }

  close(reason: CloseReason = 'shutdown'): void {
    this.batcher.close();
    this.keepAlive.close();
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    this.viewers.close(reason);
  }
}
