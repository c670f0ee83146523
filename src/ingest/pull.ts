import http from 'node:http';
import https from 'node:https';
import { logger } from '../log.js';
import type { AttachProducer } from './tcp.js';

const log = logger('ingest');

/** Edge mode: pulls an upstream relay's `/<name>.webm`, reconnecting with backoff when it drops. */
export class UpstreamPull {
  private request: http.ClientRequest | null = null;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private backoff = 500;

  constructor(
    private readonly url: string,
    private readonly attach: AttachProducer,
  ) {}

  start(): void {
    this.connect();
  }

  private retry(why: string): void {
    if (this.stopped || this.timer) return;
    log.warn(`upstream ${this.url}: ${why}; reconnecting in ${this.backoff} ms`);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, this.backoff);
    this.backoff = Math.min(this.backoff * 2, 10_000);
  }

  private connect(): void {
    const client = this.url.startsWith('https:') ? https : http;
    const request = client.get(this.url, { headers: { 'user-agent': 'webm-relay edge' } }, (response) => {
      if (response.statusCode !== 200) {
        response.resume();
        return this.retry(`HTTP ${response.statusCode}`);
      }
      const startedAt = Date.now();
      const ok = this.attach(response, `upstream ${this.url}`, () => request.destroy());
      if (!ok) return request.destroy();
      response.once('close', () => {
        if (Date.now() - startedAt > 5000) this.backoff = 500;
        this.retry('stream ended');
      });
    });
    request.on('error', (error) => this.retry(error.message));
    this.request = request;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.request?.destroy();
  }
}
