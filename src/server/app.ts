import express, { type Request, type Response } from 'express';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { WebSocketServer } from 'ws';
import { STREAM_NAME } from '../config/options.js';
import { logger } from '../log.js';
import type { RelayStats } from '../protocol.js';
import type { Snapshots } from '../stream/snapshot.js';
import type { Stream } from '../stream/stream.js';
import { bearerMatches } from './auth.js';
import { HttpTransport } from './transports.js';
import { attachWebSockets } from './websocket.js';

const log = logger('server');

export interface ServerOptions {
  publicDir: string;
  wsMaxPayloadBytes: number;
  /** Prometheus text for /metrics. */
  metrics: () => Promise<{ contentType: string; body: string }>;
  /** Why /healthz must fail even while streams are live (draining), or null. */
  unhealthy?: () => string | null;
}

/** What the server needs of the relay. */
export interface RelayView {
  readonly streams: ReadonlyMap<string, Stream>;
  readonly snapshots: Snapshots;
  stats(): RelayStats;
}

const NAME = STREAM_NAME.source.slice(1, -1);
/** `/<name>.webm` */
const STREAM_PATH = new RegExp(`^/(${NAME})\\.webm$`);
/** `/<name>/` (and `/<name>/index.html`) */
const PLAYER_PATH = new RegExp(`^/(${NAME})/(?:index\\.html)?$`);
const SNAPSHOT_PATH = new RegExp(`^/(${NAME})/snapshot\\.jpg$`);
/** `/<name>`: the stream's WebSocket; a plain GET there is a client that lost its Upgrade header. */
const WEBSOCKET_PATH = new RegExp(`^/(${NAME})$`);

const textReply = (res: Response, status: number, text: string) => res.status(status).set('Cache-Control', 'no-store').type('text/plain').send(`${text}\n`);

export function createServer(relay: RelayView, options: ServerOptions): { server: http.Server; wss: WebSocketServer } {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Every answer says whether a cache may keep it: by default nothing here may be kept
  // (state, errors, the streams); the player's files and pages override this.
  app.use((_req, res, next) => {
    res.setHeader('Cache-Control', 'no-store');
    next();
  });
  const playerPage = playerPageTemplate(options.publicDir);
  const onlyStream = relay.streams.size === 1 ? [...relay.streams.keys()][0] : null;

  const streamFor = (match: RegExpExecArray | null): Stream | undefined => (match ? relay.streams.get(match[1]) : undefined);

  // --- streams ---------------------------------------------------------------------
  app.use((req: Request, res: Response, next) => {
    const url = req.path;
    let match: RegExpExecArray | null;
    if ((match = STREAM_PATH.exec(url))) {
      const stream = streamFor(match);
      if (!stream) return textReply(res, 404, `no stream named "${match[1]}"`);
      if (req.method === 'GET' || req.method === 'HEAD') return watch(stream, req, res);
      if (req.method === 'PUT') return publish(stream, req, res);
      res.set('Allow', 'GET, HEAD, PUT');
      return textReply(res, 405, 'use GET to watch, PUT to publish');
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    if ((match = PLAYER_PATH.exec(url))) {
      const stream = streamFor(match);
      if (!stream) return next();
      return res.set('Cache-Control', 'no-cache').type('html').send(playerPage(stream.name, '../'));
    }
    if ((match = SNAPSHOT_PATH.exec(url))) {
      const stream = streamFor(match);
      if (!stream) return textReply(res, 404, `no stream named "${match[1]}"`);
      return void relay.snapshots.jpeg(stream.name).then((jpeg) => {
        if (!jpeg) return textReply(res, 503, 'no picture: the stream is not live');
        res.status(200).set({ 'Content-Type': 'image/jpeg', 'Cache-Control': 'no-cache' }).send(jpeg);
      });
    }
    if ((match = WEBSOCKET_PATH.exec(url)) && streamFor(match)) {
      res.set('Upgrade', 'websocket');
      return textReply(res, 426, `/${match[1]} is the stream's WebSocket (a proxy may have dropped the Upgrade header); its player page is /${match[1]}/`);
    }
    next();
  });

  // `PUT /ingest`: publishing before streams had names; it feeds the stream "live".
  app.put('/ingest', (req, res) => {
    const stream = relay.streams.get('live');
    if (!stream) return textReply(res, 404, 'no stream named "live" (publish with PUT /NAME.webm)');
    publish(stream, req, res);
  });

  // --- the relay -------------------------------------------------------------------
  app.get('/', (_req, res, next) => {
    if (!onlyStream) return next();
    res.set('Cache-Control', 'no-cache').type('html').send(playerPage(onlyStream, './'));
  });
  // A cache answering 200 for a dead relay would hide it from every load balancer behind it: no-store.
  app.get('/healthz', (_req, res) => {
    const unhealthy = options.unhealthy?.() ?? null;
    if (unhealthy) return textReply(res, 503, unhealthy);
    // Live while any stream is: a load balancer sends viewers to a relay that has something to show.
    const live = [...relay.streams.values()].filter((s) => s.live).map((s) => s.name);
    // An edge says why its upstream is not delivering.
    const troubles = [...relay.streams.values()].map((s) => s.upstreamTrouble).filter((t) => t !== null);
    res.status(live.length > 0 ? 200 : 503).set('Cache-Control', 'no-store').type('text/plain');
    res.send(live.length > 0 ? `live: ${live.join(' ')}\n` : `no stream${troubles.length ? `: ${troubles.join('; ')}` : ''}\n`);
  });
  app.get('/api/stats', (_req, res) => {
    res.set('Cache-Control', 'no-store').json(relay.stats());
  });
  app.get('/api/streams', (_req, res) => {
    res.set('Cache-Control', 'no-store').json({ streams: [...relay.streams.values()].map((s) => s.summary()) });
  });
  app.get('/api/streams/:name', (req, res) => {
    const stream = relay.streams.get(String(req.params.name));
    if (!stream) return textReply(res, 404, 'no such stream');
    res.set('Cache-Control', 'no-store').json(stream.stats());
  });
  app.get('/metrics', async (_req, res) => {
    const { contentType, body } = await options.metrics();
    res.set('Cache-Control', 'no-store').type(contentType).send(body);
  });
  app.get('/', (_req, res) => res.set('Cache-Control', 'no-cache').sendFile(path.join(options.publicDir, 'streams.html')));
  // The player's files change only with a new release: caches may keep them, asking first.
  app.use(
    express.static(options.publicDir, {
      index: false,
      dotfiles: 'ignore',
      fallthrough: true,
      cacheControl: false,
      setHeaders: (res) => res.setHeader('Cache-Control', 'no-cache'),
    }),
  );
  app.use((_req, res) => textReply(res, 404, 'not found'));

  const server = http.createServer(app);
  server.headersTimeout = 10_000;
  server.requestTimeout = 0; // /<name>.webm responses last as long as the viewer watches
  const wss = attachWebSockets(server, relay.streams, options.wsMaxPayloadBytes);
  return { server, wss };
}

/** `GET /<name>.webm`: one endless response, init segment then clusters from a keyframe. */
function watch(stream: Stream, req: Request, res: Response): void {
  res.status(200).set({
    'Content-Type': 'video/webm',
    'Cache-Control': 'no-store',
    // nginx passes each chunk on at once instead of buffering it (200-300 ms measured on audio).
    'X-Accel-Buffering': 'no',
    'Accept-Ranges': 'none',
    'X-Content-Type-Options': 'nosniff',
    // The response lasts as long as the stream: when it ends, so does the connection.
    Connection: 'close',
  });
  if (req.method === 'HEAD') {
    if (stream.hub.full) res.status(503);
    res.end();
    return;
  }
  // A Range request (browsers send `bytes=0-`) gets the live stream from its start, as 200.
  res.socket?.setNoDelay(true);
  const viewer = stream.hub.add(new HttpTransport(res));
  if (!viewer) {
    res.status(503).set('Retry-After', '10').type('text/plain').send('too many viewers\n');
    return;
  }
  res.flushHeaders();
  res.once('close', () => stream.hub.remove(viewer));
}

/** `PUT /<name>.webm` with `Authorization: Bearer TOKEN`: a producer from anywhere. */
function publish(stream: Stream, req: Request, res: Response): void {
  const token = stream.config.publishToken;
  if (!token) {
    textReply(res, 404, `stream "${stream.name}" takes no published stream (configure publish: { token: ... }${stream.name === 'live' ? ' or start the relay with --ingest-token' : ''})`);
    return;
  }
  if (!bearerMatches(req.headers.authorization, token)) {
    log.warn(`PUT ${req.path} from ${req.socket.remoteAddress}: refused, wrong or missing token`);
    res.status(401).set('WWW-Authenticate', 'Bearer');
    textReply(res, 401, 'wrong or missing token');
    return;
  }
  const label = `http ${req.socket.remoteAddress}:${req.socket.remotePort}`;
  let rejected = false;
  const accepted = stream.attach(req, label, (rejection) => {
    rejected = true;
    res.set('Connection', 'close');
    textReply(res, rejection.status, rejection.status === 400 ? `not a live WebM stream: ${rejection.message}` : `refused: ${rejection.message}`);
    res.once('finish', () => req.destroy());
  });
  if (!accepted) {
    res.set('Connection', 'close');
    textReply(res, 409, 'another producer is publishing');
    return;
  }
  req.once('end', () => {
    if (!rejected) res.status(204).end();
  });
}

/**
 * The player page for one stream: public/index.html with the stream's name and a
 * base URL, so that its relative links work at `/`, at `/<name>/` and under any
 * path prefix a proxy adds.
 */
function playerPageTemplate(publicDir: string): (name: string, base: string) => string {
  let template: string | null = null;
  return (name, base) => {
    template ??= fs.readFileSync(path.join(publicDir, 'index.html'), 'utf8');
    const head = `<head>\n<base href="${base}">\n<meta name="webm-relay-stream" content="${name}">`;
    return template.replace('<head>', head);
  };
}
