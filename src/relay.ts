import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Server } from 'node:http';
import type { Registry } from 'prom-client';
import type { WebSocketServer } from 'ws';
import type { Config } from './config.js';
import { Hub, type HubStats } from './hub/hub.js';
import { Ingest, type IngestStats } from './ingest/ingest.js';
import { UpstreamPull, type PullStats } from './ingest/pull.js';
import { logger } from './log.js';
import { createMetrics } from './metrics.js';
import { Normalizer, type NormalizerStats } from './normalizer/normalizer.js';
import { createServer } from './server/server.js';
import { encoderArgs } from './source/pipeline.js';
import { Supervisor } from './source/supervisor.js';

const log = logger('relay');

export const PACKAGE_PUBLIC_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../public');

export interface RelayStats extends HubStats {
  uptimeSeconds: number;
  mimeType: string | null;
  ingest: IngestStats;
  /** Edge mode: the pull from the upstream relay. */
  upstream: PullStats | null;
  /** Shutting down: /healthz fails, viewers are being moved elsewhere. */
  draining: boolean;
  normalizer: NormalizerStats;
  encoder: { pid: number | null; restarts: number } | null;
  encoderRestarts: number;
}

/** The whole relay: source, ingest, normalizer, hub and server, started and stopped together. */
export class Relay {
  readonly hub: Hub;
  readonly normalizer: Normalizer;
  readonly ingest: Ingest;
  encoder: Supervisor | null = null;
  private pull: UpstreamPull | null = null;
  private draining = false;
  private http: Server | null = null;
  private wss: WebSocketServer | null = null;
  private readonly metrics: Registry;
  private readonly startedAt = Date.now();
  private stopping = false;
  /** Resolves with a message when the relay cannot go on (e.g. GStreamer missing). */
  readonly fatal: Promise<string>;
  private reportFatal!: (message: string) => void;

  constructor(readonly config: Config) {
    this.hub = new Hub({
      join: config.join,
      maxViewers: config.maxViewers,
      maxQueueBytes: config.maxQueueBytes,
      stallTimeoutMs: config.stallTimeoutMs,
      producerGraceMs: config.producerGraceMs,
    });
    this.normalizer = new Normalizer(this.hub);
    this.ingest = new Ingest(this.normalizer, this.hub, {
      maxHeaderSize: config.maxHeaderBytes,
      maxElementSize: config.maxElementBytes,
    });
    this.metrics = createMetrics(() => this.stats());
    this.fatal = new Promise((resolve) => (this.reportFatal = resolve));
  }

  stats(): RelayStats {
    const hub = this.hub.stats();
    const restarts = this.encoder?.restarts ?? 0;
    return {
      ...hub,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      mimeType: this.hub.initSegment?.info.mimeType ?? null,
      ingest: this.ingest.stats(),
      upstream: this.pull?.stats() ?? null,
      draining: this.draining,
      normalizer: { ...this.normalizer.stats },
      encoder: this.encoder ? { pid: this.encoder.pid ?? null, restarts } : null,
      encoderRestarts: restarts,
    };
  }

  /** Starts serving viewers and taking the stream. Resolves with the bound HTTP port. */
  async start(): Promise<number> {
    const config = this.config;
    const ingest = config.ingest;
    // Ports first, so that once "serving" is logged a producer can connect too.
    let encoderPort = 0;
    if (ingest.kind === 'encoder') encoderPort = await this.ingest.listenTcp('127.0.0.1', 0);
    else if (ingest.kind === 'tcp') await this.ingest.listenTcp(ingest.host, ingest.port);

    const { server, wss } = createServer(this.hub, {
      publicDir: config.publicDir || PACKAGE_PUBLIC_DIR,
      wsMaxPayloadBytes: config.wsMaxPayloadBytes,
      ingestToken: config.ingestToken,
      ingest: this.ingest,
      stats: () => ({ ...this.stats() }),
      metrics: async () => ({ contentType: this.metrics.contentType, body: await this.metrics.metrics() }),
      unhealthy: () => (this.draining ? 'draining: shutting down' : null),
      healthDetail: () => this.pull?.trouble ?? null,
    });
    this.http = server;
    this.wss = wss;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => resolve());
    });
    // A shutdown that began while we were binding must not be followed by a new encoder.
    if (this.stopping) return 0;
    const port = (server.address() as { port: number }).port;
    log.info(`serving http://${config.host}:${port}/ (player), /live.webm, WebSocket /live`);

    switch (ingest.kind) {
      case 'encoder': {
        // The encoder connects to a port of our own that only this machine can reach.
        const args = encoderArgs(config, encoderPort);
        log.info(`encoder: ${config.gstLaunch} ${args.join(' ')}`);
        this.encoder = new Supervisor({ command: config.gstLaunch, args });
        this.encoder.on('fatal', (message: string) => this.reportFatal(message));
        this.ingest.onStream = () => this.encoder?.markDelivered();
        this.encoder.start();
        break;
      }
      case 'stdin':
        this.ingest.readStdin(() => log.info('standard input ended'));
        break;
      case 'http':
        this.pull = new UpstreamPull(ingest.url, (stream, label, disconnect) => this.ingest.attach(stream, label, disconnect), {
          readTimeoutMs: config.upstreamTimeoutMs,
        });
        this.pull.start();
        break;
    }
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
    const viewers = this.hub.stats().connections;
    if (ms <= 0 || viewers === 0) return;
    log.info(`draining: /healthz fails, no new connections; ${viewers} viewers closed in ${ms} ms`);
    const until = Date.now() + ms;
    while (Date.now() < until && this.hub.stats().connections > 0) {
      await new Promise((resolve) => setTimeout(resolve, Math.min(100, until - Date.now())));
    }
  }

  /** Stops taking new viewers, closes the current ones, stops the encoder. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.pull?.stop();
    const closing: Promise<unknown>[] = [];
    if (this.http) {
      const server = this.http;
      closing.push(new Promise((resolve) => server.close(resolve)));
    }
    this.hub.close('relay shutting down');
    for (const client of this.wss?.clients ?? []) client.terminate();
    this.http?.closeAllConnections();
    closing.push(this.encoder?.stop() ?? Promise.resolve(), this.ingest.close());
    await Promise.all(closing);
  }
}
