import type { JoinPolicy, RecoverPolicy } from '../config/options.js';
import type { CloseReason, StreamStats } from '../protocol.js';
import type { VersionedInit } from '../stream/events.js';
import type { MediaChunk } from './batcher.js';

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
  sendInit(init: VersionedInit, replacing: boolean): boolean;
  /** Bytes that carry no media and keep proxies from timing out an idle connection (see keepalive.ts). */
  keepAlive(): void;
  close(reason: CloseReason): void;
}

/** A count of viewers for each transport. */
type CountByTransport = Record<ViewerTransport['kind'], number>;

/** How many of a stream's viewers use each transport, as they connect and leave. */
export type ViewersByTransport = Readonly<CountByTransport>;

/** Viewers of every stream together, against the relay's --max-viewers. */
export class ViewerBudget {
  used = 0;
  constructor(readonly max: number) {}
}

export interface ViewerPolicy {
  join: JoinPolicy;
  recover: RecoverPolicy;
  maxViewers: number;
  /** The backlog (bytes its socket has not taken) at which `recover` applies. */
  maxQueueBytes: number;
  /** A viewer whose socket has taken nothing for this long while data waits is disconnected. */
  stallTimeoutMs: number;
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

export type ViewerCounters = Pick<StreamStats, 'bytesOut' | 'joins' | 'rejected' | 'skips' | 'slowDisconnects' | 'stallDisconnects'>;

/**
 * One stream's viewers and the policies that decide what each is sent: admission
 * (the stream's and the relay's viewer limits), where a joiner starts (`join`),
 * what happens to one that falls behind (`recover`), and when one that reads
 * nothing is dropped (`stallTimeoutMs`). Nobody waits for a slow viewer.
 */
export class ViewerSet {
  private readonly viewers = new Set<Viewer>();
  private readonly connected: CountByTransport = { http: 0, ws: 0 };
  readonly counters: ViewerCounters = { bytesOut: 0, joins: 0, rejected: 0, skips: 0, slowDisconnects: 0, stallDisconnects: 0 };
  private readonly stallTimer: NodeJS.Timeout;

  constructor(
    readonly policy: ViewerPolicy,
    private readonly budget: ViewerBudget,
  ) {
    this.stallTimer = setInterval(() => this.checkStalls(), Math.min(1000, policy.stallTimeoutMs / 4));
    this.stallTimer.unref();
  }

  get size(): number {
    return this.viewers.size;
  }

  /** Connected viewers by transport, watching or not: what the chunk joiner frames for. */
  get byTransport(): ViewersByTransport {
    return this.connected;
  }

  /** Whether one more viewer may join this stream. */
  get full(): boolean {
    return this.viewers.size >= this.policy.maxViewers || this.budget.used >= this.budget.max;
  }

  /** Admits a viewer and sends it the init segment and, by the join policy, the GOP so far. Null when full. */
  add(transport: ViewerTransport, init: VersionedInit | null, gop: readonly Buffer[]): Viewer | null {
    if (this.full) {
      this.counters.rejected++;
      return null;
    }
    const now = Date.now();
    const viewer: Viewer = { transport, state: ViewerState.AwaitKeyframe, hasInit: false, sentBytes: 0, lastProgress: now, lastPending: 0 };
    this.viewers.add(viewer);
    this.budget.used++;
    this.connected[transport.kind]++;
    this.counters.joins++;
    if (init) {
      viewer.hasInit = transport.sendInit(init, false);
      if (this.policy.join === 'latest-keyframe' && gop.length > 0) {
        viewer.state = ViewerState.Live;
        for (const data of gop) this.send(viewer, data);
      }
    }
    return viewer;
  }

  remove(viewer: Viewer, reason?: CloseReason): void {
    if (!this.viewers.delete(viewer)) return;
    this.budget.used--;
    this.connected[viewer.transport.kind]--;
    if (reason) viewer.transport.close(reason);
  }

  /** Every viewer that has an init segment gets the new one and waits for a keyframe; those that cannot take it are closed. */
  initChanged(init: VersionedInit): void {
    for (const viewer of this.viewers) {
      if (!viewer.hasInit) continue;
      if (viewer.transport.sendInit(init, true)) viewer.state = ViewerState.AwaitKeyframe;
      else this.remove(viewer, 'tracksChanged');
    }
  }

  deliver(chunk: MediaChunk, init: VersionedInit): void {
    for (const viewer of this.viewers) this.deliverTo(viewer, chunk, init);
  }

  private deliverTo(viewer: Viewer, chunk: MediaChunk, init: VersionedInit): void {
    const pending = viewer.transport.pendingBytes;
    if (viewer.state === ViewerState.AwaitKeyframe) {
      // Resume only once half the backlog limit has drained, so a viewer at the edge
      // of its link does not flap between skipping and sending every GOP.
      if (!chunk.fromKeyframe || pending > this.policy.maxQueueBytes / 2) return;
      if (!viewer.hasInit) viewer.hasInit = viewer.transport.sendInit(init, false);
      viewer.state = ViewerState.Live;
      this.send(viewer, chunk.fromKeyframe);
    } else if (pending > this.policy.maxQueueBytes) {
      if (this.policy.recover === 'disconnect') {
        this.counters.slowDisconnects++;
        this.remove(viewer, 'tooSlow');
      } else {
        viewer.state = ViewerState.AwaitKeyframe;
        this.counters.skips++;
      }
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
      if (now - viewer.lastProgress > this.policy.stallTimeoutMs) {
        this.counters.stallDisconnects++;
        this.remove(viewer, 'stalled');
      }
    }
  }

  /**
   * Browsers open and drop probe requests on <video src>: a connection counts as a
   * viewer once its socket has taken media, more than the init segment.
   */
  countWatching(): CountByTransport {
    const byTransport: CountByTransport = { http: 0, ws: 0 };
    for (const viewer of this.viewers) {
      if (viewer.sentBytes > viewer.transport.pendingBytes) byTransport[viewer.transport.kind]++;
    }
    return byTransport;
  }

  [Symbol.iterator](): IterableIterator<Viewer> {
    return this.viewers.values();
  }

  closeAll(reason: CloseReason): void {
    for (const viewer of this.viewers) this.remove(viewer, reason);
  }

  close(reason: CloseReason): void {
    clearInterval(this.stallTimer);
    this.closeAll(reason);
  }
}
