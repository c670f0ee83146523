/**
 * Keep-alive policy: a viewer that has been sent nothing for `idleMs` (the producer is
 * away, within `--producer-grace`) gets a few bytes that carry no media, so that the
 * idle timeouts of proxies and load balancers in front of the relay (HAProxy's
 * `timeout server`, nginx's `proxy_read_timeout`, Varnish's `between_bytes_timeout`)
 * do not cut the viewers the grace period is there to keep. What the bytes are is the
 * transport's business (`ViewerTransport.keepAlive`).
 */

/** What the keep-alive needs to know of a viewer. */
export interface IdleViewer {
  readonly transport: { keepAlive(): void; readonly pendingBytes: number };
  /** Media bytes sent to it so far. */
  readonly sentBytes: number;
}

/** Idle time before a keep-alive, and between two of them. Well under every proxy default (30 s and up). */
export const KEEPALIVE_IDLE_MS = 1000;

export class KeepAlive {
  private readonly timer: NodeJS.Timeout;
  /** Per viewer: its `sentBytes` when last seen, and since when it has not changed. */
  private readonly seen = new WeakMap<IdleViewer, { sentBytes: number; since: number }>();
  /** Keep-alives sent, all viewers together. */
  sent = 0;

  constructor(
    private readonly viewers: () => Iterable<IdleViewer>,
    private readonly idleMs = KEEPALIVE_IDLE_MS,
  ) {
    this.timer = setInterval(() => this.check(), Math.max(50, idleMs / 2));
    this.timer.unref();
  }

  private check(): void {
    const now = Date.now();
    for (const viewer of this.viewers()) {
      const last = this.seen.get(viewer);
      if (!last) {
        this.seen.set(viewer, { sentBytes: viewer.sentBytes, since: now });
        continue;
      }
      // Updated in place: while media flows every viewer takes this branch on every check.
      if (last.sentBytes !== viewer.sentBytes) {
        last.sentBytes = viewer.sentBytes;
        last.since = now;
        continue;
      }
      // Bytes still queued will reach the proxy anyway; a viewer that reads nothing is the stall policy's.
      if (now - last.since < this.idleMs || viewer.transport.pendingBytes > 0) continue;
      viewer.transport.keepAlive();
      last.since = now;
      this.sent++;
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}
