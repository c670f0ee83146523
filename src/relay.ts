import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { WebSocketServer } from 'ws';
import type { RelayConfig } from './config/options.js';
import { ViewerBudget } from './hub/viewers.js';
import { logger } from './log.js';
import { createMetrics } from './metrics.js';
import type { RelayStats } from './protocol.js';
import { createServer } from './server/app.js';
import { joinFramed } from './server/transports.js';
import type { PublishSockets } from './server/publish-socket.js';
import { Snapshots } from './stream/snapshot.js';
import { Stream } from './stream/stream.js';

const log = logger('relay');

export const PACKAGE_PUBLIC_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../public');

/** The whole relay: its named streams and the server in front of them, started and stopped together. */
export class Relay {
  readonly streams = new Map<string, Stream>();
  readonly snapshots: Snapshots;
  private http: Server | null = null;
  private wss: WebSocketServer | null = null;
  private publishers: PublishSockets | null = null;
  private readonly metrics: Registry;
  private readonly startedAt = Date.now();
  private stopping = false;
  private draining = false;
  /** Resolves with a message when the relay cannot go on (e.g. GStreamer missing). */
  readonly fatal: Promise<string>;
  private reportFatal!: (message: string) => void;

  constructor(readonly config: RelayConfig) {
    this.fatal = new Promise((resolve) => (this.reportFatal = resolve));
    const budget = new ViewerBudget(config.maxViewers);
    for (const streamConfig of config.streams) {
      const stream = new Stream(streamConfig, { budget, gstLaunch: config.gstLaunch, fatal: (message) => this.reportFatal(message), joinChunk: joinFramed });
      this.streams.set(stream.name, stream);
    }
    this.snapshots = new Snapshots(this.streams, config.gstLaunch);
    this.metrics = createMetrics(this);
  }

  /** The relay's totals; with one stream, that stream's stats too (the shape from before there were several). */
  stats(): RelayStats {
    const all = [...this.streams.values()].map((s) => s.stats());
    const sum = (read: (s: (typeof all)[number]) => number) => all.reduce((total, s) => total + read(s), 0);
    const totals = {
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      draining: this.draining,
      streams: all.length,
      live: all.some((s) => s.live),
      viewers: sum((s) => s.viewers),
      connections: sum((s) => s.connections),
      bitrate: sum((s) => s.bitrate),
    };
    return all.length === 1 ? { ...all[0], ...totals } : totals;
  }

  /** Starts serving viewers and taking the streams. Resolves with the bound HTTP port. */
  async start(): Promise<number> {
    const config = this.config;
    // Ingest ports first, so that once "serving" is logged a producer can connect too.
    // Encoders start after, and only if no shutdown began meanwhile.
    const { server, wss, publishers } = createServer(this, {
      publicDir: config.publicDir || PACKAGE_PUBLIC_DIR,
      wsMaxPayloadBytes: config.wsMaxPayloadBytes,
      metrics: async () => ({ contentType: this.metrics.contentType, body: await this.metrics.metrics() }),
      unhealthy: () => (this.draining ? 'draining: shutting down' : null),
    });
    this.http = server;
    this.wss = wss;
    this.publishers = publishers;
    const listeners = [...this.streams.values()].filter((s) => s.config.producer.kind === 'tcp');
    await Promise.all(listeners.map((s) => s.start()));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => resolve());
    });
    if (this.stopping) return 0;
    const port = (server.address() as { port: number }).port;
    const names = [...this.streams.keys()];
    const what = names.length === 1 ? `/${names[0]}.webm, WebSocket /${names[0]}` : `streams ${names.join(', ')}`;
    log.info(`serving http://${config.host}:${port}/ (player), ${what}`);
    await Promise.all([...this.streams.values()].filter((s) => s.config.producer.kind !== 'tcp').map((s) => s.start()));
    return port;
  }

  /**
   * The first half of a graceful shutdown: /healthz fails and the listener closes at
   * once, so load balancers stop sending viewers here (a refused connection is retried
   * elsewhere); the viewers already here keep watching for `ms`, time for the balancer's
   * health checks to notice, and are then closed by `stop()` to reconnect elsewhere.
   * Returns early when no viewer is left to move.
   */
  async drain(ms: number): Promise<void> {
    this.draining = true;
    this.http?.close();
    // Idle keep-alive connections (health checkers, API clients) would otherwise still reach us.
    this.http?.closeIdleConnections();
    const connections = () => [...this.streams.values()].reduce((n, s) => n + s.hub.stats().connections, 0);
    if (ms <= 0 || connections() === 0) return;
    log.info(`draining: /healthz fails, no new connections; ${connections()} viewers closed in ${ms} ms`);
    const until = Date.now() + ms;
    while (Date.now() < until && connections() > 0) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(100, until - Date.now())));
    }
  }

  /** Stops taking new viewers, closes the current ones, stops the encoders. */
  async stop(): Promise<void> {
    this.stopping = true;
    const closing: Promise<unknown>[] = [];
    if (this.http) {
      const server = this.http;
      closing.push(new Promise((resolve) => server.close(resolve)));
    }
    closing.push(...[...this.streams.values()].map((s) => s.stop()));
    for (const client of this.wss?.clients ?? []) client.terminate();
    this.publishers?.close();
    this.http?.closeAllConnections();
    this.snapshots.close();
    await Promise.all(closing);
  }
}
