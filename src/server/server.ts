import express, { type Request, type Response } from 'express';
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import type { Hub } from '../hub/hub.js';
import type { Ingest } from '../ingest/ingest.js';
import { logger } from '../log.js';
import { HttpTransport, WebSocketTransport } from './transports.js';

const log = logger('server');

export interface ServerOptions {
  publicDir: string;
  wsMaxPayloadBytes: number;
  /** When set, producers may publish with `PUT /ingest` and this Bearer token. */
  ingestToken: string | null;
  ingest: Ingest;
  /** JSON for /api/stats. */
  stats: () => Record<string, unknown>;
  /** Prometheus text for /metrics. */
  metrics: () => Promise<{ contentType: string; body: string }>;
  /** Why /healthz must fail even while a stream is live (draining), or null. */
  unhealthy?: () => string | null;
  /** What /healthz adds while no stream is live (an edge's upstream trouble), or null. */
  healthDetail?: () => string | null;
}

/** The endless responses: never stored, never buffered by a proxy (nginx reads `X-Accel-Buffering`). */
const ENDLESS_HEADERS = {
  'Cache-Control': 'no-store',
  'X-Accel-Buffering': 'no',
} as const;

/** Messages a player may send; anything else is counted and ignored. */
const CLIENT_MESSAGES = new Set(['ping']);

/** Compares a presented Bearer token with the secret without leaking, through timing, how much matched. */
function bearerMatches(header: string | undefined, secret: string): boolean {
  const presented = /^Bearer\s+(\S+)$/i.exec(header ?? '')?.[1] ?? '';
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(presented), digest(secret));
}

export function createServer(hub: Hub, options: ServerOptions): { server: http.Server; wss: WebSocketServer } {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Every answer says whether a cache may keep it: by default nothing here may be kept
  // (state, errors, the stream itself); the player's files below override this.
  app.use((_req, res, next) => {
    res.setHeader('Cache-Control', 'no-store');
    next();
  });

  app.get('/live.webm', (req: Request, res: Response) => {
    res.status(200).set({
      'Content-Type': 'video/webm',
      ...ENDLESS_HEADERS,
      'Accept-Ranges': 'none',
      'X-Content-Type-Options': 'nosniff',
      // The response lasts as long as the stream: when it ends, so does the connection.
      Connection: 'close',
    });
    if (req.method === 'HEAD') {
      if (hub.full) res.status(503);
      res.end();
      return;
    }
    // A Range request (browsers send `bytes=0-`) gets the live stream from its start, as 200.
    res.socket?.setNoDelay(true);
    const viewer = hub.add(new HttpTransport(res));
    if (!viewer) {
      res.status(503).set('Retry-After', '10').type('text/plain').send('too many viewers\n');
      return;
    }
    res.flushHeaders();
    res.once('close', () => hub.remove(viewer));
  });

  app.put('/ingest', (req: Request, res: Response) => {
    if (!options.ingestToken) {
      res.status(404).type('text/plain').send('publishing over HTTP is off (start the relay with --ingest-token)\n');
      return;
    }
    if (!bearerMatches(req.headers.authorization, options.ingestToken)) {
      log.warn(`PUT /ingest from ${req.socket.remoteAddress}: refused, wrong or missing token`);
      res.status(401).set('WWW-Authenticate', 'Bearer').type('text/plain').send('wrong or missing token\n');
      return;
    }
    const label = `http ${req.socket.remoteAddress}:${req.socket.remotePort}`;
    let rejected = false;
    const accepted = options.ingest.attach(req, label, () => {
      rejected = true;
      res.status(400).set('Connection', 'close').type('text/plain').send('not a live WebM stream (see the relay log)\n');
      res.once('finish', () => req.destroy());
    });
    if (!accepted) {
      res.status(409).set('Connection', 'close').type('text/plain').send('another producer is publishing\n');
      return;
    }
    req.once('end', () => {
      if (!rejected) res.status(204).end();
    });
  });

  // A cache answering 200 for a dead relay would hide it from every load balancer behind it.
  app.get('/healthz', (_req, res) => {
    const unhealthy = options.unhealthy?.() ?? null;
    if (unhealthy) {
      res.status(503).type('text/plain').send(`${unhealthy}\n`);
      return;
    }
    const live = hub.live;
    const detail = live ? null : (options.healthDetail?.() ?? null);
    res.status(live ? 200 : 503).type('text/plain').send(live ? 'live\n' : `no stream${detail ? `: ${detail}` : ''}\n`);
  });
  app.get('/api/stats', (_req, res) => {
    res.json(options.stats());
  });
  app.get('/metrics', async (_req, res) => {
    const { contentType, body } = await options.metrics();
    res.type(contentType).send(body);
  });
  // A plain GET of the WebSocket path: a proxy on the way dropped the Upgrade header.
  app.get('/live', (_req, res) => {
    res
      .status(426)
      .set({ Upgrade: 'websocket', Connection: 'Upgrade' })
      .type('text/plain')
      .send('426 Upgrade Required: /live is a WebSocket endpoint, and this request came without "Upgrade: websocket". ' +
        'If a proxy is in front of the relay, it must pass Upgrade and Connection on (nginx: proxy_http_version 1.1 and ' +
        'proxy_set_header Upgrade/Connection; Varnish: return (pipe) for upgrades). The stream for a <video> is /live.webm.\n');
  });
  // The player's files change only with a new release: caches may keep them, asking first.
  app.use(
    express.static(options.publicDir, {
      index: 'index.html',
      dotfiles: 'ignore',
      fallthrough: true,
      cacheControl: false,
      setHeaders: (res) => res.setHeader('Cache-Control', 'no-cache'),
    }),
  );
  app.use((_req, res) => {
    res.status(404).type('text/plain').send('not found\n');
  });

  const server = http.createServer(app);
  server.headersTimeout = 10_000;
  server.requestTimeout = 0; // /live.webm responses last as long as the viewer watches

  // No extensions: WebSocketTransport writes media frames to the socket itself.
  const wss = new WebSocketServer({ noServer: true, maxPayload: options.wsMaxPayloadBytes, perMessageDeflate: false });
  server.on('upgrade', (req, socket: Socket, head) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/live') {
      socket.end('HTTP/1.1 404 Not Found\r\nCache-Control: no-store\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', (error) => log.debug(`websocket: ${error.message}`));
      const viewer = hub.add(new WebSocketTransport(ws, socket));
      if (!viewer) {
        ws.close(1013, 'too many viewers');
        return;
      }
      ws.on('message', (data, isBinary) => {
        const text = isBinary ? '' : data.toString();
        let type: unknown;
        try {
          type = (JSON.parse(text) as { type?: unknown }).type;
        } catch {
          type = undefined;
        }
        if (typeof type === 'string' && CLIENT_MESSAGES.has(type)) {
          ws.send(JSON.stringify({ type: 'pong', viewers: hub.watching }));
        } else {
          log.debug('websocket: ignored an unexpected message');
        }
      });
      ws.once('close', () => hub.remove(viewer));
    });
  });
  return { server, wss };
}
