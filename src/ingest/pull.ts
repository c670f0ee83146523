import http from 'node:http';
import https from 'node:https';
import { logger } from '../log.js';
import type { StreamStats } from '../protocol.js';
import type { AttachProducer } from './tcp.js';

const log = logger('pull');

export interface PullOptions {
  /**
   * No byte from the upstream for this long: it is hung (stopped process, dead route,
   * a proxy holding the connection), so drop it and connect again. A healthy upstream
   * sends media many times a second, and keep-alive bytes during its producer's gaps.
   */
  readTimeoutMs: number;
  /** First wait before reconnecting; doubles on each failure up to `maxBackoffMs`. */
  minBackoffMs: number;
  /**
   * Longest wait between attempts. Kept low: a connection refused costs the origin
   * nothing, and every second of backoff after it is back is a second viewers wait.
   */
  maxBackoffMs: number;
}

export const DEFAULT_PULL_OPTIONS: PullOptions = { readTimeoutMs: 3000, minBackoffMs: 250, maxBackoffMs: 1000 };

export type PullStats = NonNullable<StreamStats['upstream']>;
/** Connecting (or waiting before the next attempt), or receiving bytes. */
export type PullState = PullStats['state'];

/**
 * Edge mode: pulls an upstream relay's `/<name>.webm` and hands it to `attach` as one
 * producer, reconnecting when it ends, fails, or stops sending.
 */
export class UpstreamPull {
  private readonly options: PullOptions;
  private request: http.ClientRequest | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private backoffMs: number;
  private state: PullState = 'connecting';
  private problem: string | null = null;
  private lastByteAt = 0;
  private readonly counts = { connects: 0, readTimeouts: 0 };

  constructor(
    readonly url: string,
    private readonly attach: AttachProducer,
    options: Partial<PullOptions> = {},
  ) {
    this.options = { ...DEFAULT_PULL_OPTIONS, ...options };
    this.backoffMs = this.options.minBackoffMs;
  }

  start(): void {
    this.connect();
  }

  stats(): PullStats {
    return {
      url: this.url,
      state: this.state,
      problem: this.state === 'receiving' ? null : this.problem,
      ...this.counts,
      sinceLastByteMs: this.lastByteAt ? Date.now() - this.lastByteAt : null,
    };
  }

  /** A line for /healthz while the upstream is not delivering, else null. */
  get trouble(): string | null {
    return this.state === 'receiving' ? null : `upstream ${this.url}: ${this.problem ?? 'connecting'}`;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.request?.destroy();
    this.request = null;
  }

  private connect(): void {
    if (this.stopped) return;
    this.state = 'connecting';
    const client = this.url.startsWith('https:') ? https : http;
    // Stale bytes from a cache would look like a live stream that never moves.
    const request = client.get(this.url, { headers: { 'user-agent': 'webm-relay edge', 'cache-control': 'no-cache' } });
    this.request = request;
    let ended = false;
    const end = (why: string) => {
      if (ended) return;
      ended = true;
      request.destroy();
      if (this.request === request) this.request = null;
      this.retry(why);
    };
    // Socket inactivity covers a connect that hangs, a head that never comes and a body that stops.
    request.setTimeout(this.options.readTimeoutMs, () => {
      this.counts.readTimeouts++;
      end(`no data for ${this.options.readTimeoutMs} ms (upstream hung)`);
    });
    request.on('error', (error) => end(error.message));
    request.on('response', (response) => {
      if (response.statusCode !== 200) {
        response.resume();
        return end(`HTTP ${response.statusCode}`);
      }
      response.on('data', () => {
        this.lastByteAt = Date.now();
        if (this.state !== 'receiving') {
          this.state = 'receiving';
          this.problem = null;
          this.backoffMs = this.options.minBackoffMs;
          log.info(`upstream ${this.url}: receiving`);
        }
      });
      const accepted = this.attach(response, `upstream ${this.url}`, () => end('its data was rejected'));
      if (!accepted) return end('another producer is active');
      this.counts.connects++;
      response.once('close', () => end('stream ended'));
    });
  }

  private retry(why: string): void {
    this.state = 'connecting';
    this.problem = why;
    if (this.stopped || this.timer) return;
    const wait = this.backoffMs;
    log.warn(`upstream ${this.url}: ${why}; reconnecting in ${wait} ms`);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, wait);
    this.backoffMs = Math.min(this.backoffMs * 2, this.options.maxBackoffMs);
  }
}
