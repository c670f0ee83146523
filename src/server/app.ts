import express, { type Request, type Response } from 'express';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { WebSocketServer } from 'ws';
import { OPEN_ACCESS, STREAM_NAME } from '../config/options.js';
import { logger } from '../log.js';
import { CLOSE_REASONS, type RelayStats } from '../protocol.js';
import { recordingRoutes } from '../record/routes.js';
import { segmentRoutes } from '../segments/routes.js';
import type { Snapshots } from '../stream/snapshot.js';
import type { Stream } from '../stream/stream.js';
import { AccessGate, corsHeaders, frameAncestors, type GateVerdict } from './access.js';
import { tokenCookieName } from './auth.js';
import type { PublishSockets } from './publish-socket.js';
import { FailureThrottle } from './throttle.js';
import { HttpTransport } from './transports.js';
import { attachWebSockets } from './websocket.js';

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

const log = logger('server');
const NAME = STREAM_NAME.source.slice(1, -1);
/** `/<name>.webm` */
const STREAM_PATH = new RegExp(`^/(${NAME})\\.webm$`);
/** `/<name>/` (and `/<name>/index.html`) */
const PLAYER_PATH = new RegExp(`^/(${NAME})/(?:index\\.html)?$`);
/** `/<name>/index.json`, `/<name>/<epoch>/<file>.webm`: the segment routes' shapes. */
const SEGMENT_PATH = new RegExp(`^/(${NAME})/(?:index\\.json|[^/]+/[^/]+\\.webm)$`);
const SNAPSHOT_PATH = new RegExp(`^/(${NAME})/snapshot\\.jpg$`);
/** `/<name>/publish`: the page that goes live from a browser (its WebSocket has the same path). */
const PUBLISH_PAGE_PATH = new RegExp(`^/(${NAME})/publish$`);
/** `/<name>`: the stream's WebSocket; a plain GET there is a client that lost its Upgrade header. */
const WEBSOCKET_PATH = new RegExp(`^/(${NAME})$`);

/** A short plain-text answer; headers set before it (CORS, Retry-After) go with it. */
function textReply(res: http.ServerResponse, status: number, text: string): void {
  const body = Buffer.from(`${text}\n`);
  res.writeHead(status, { 'Cache-Control': 'no-store', 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': body.length });
  res.end(body);
}

/** The HTTP status and text of a refused viewer. */
function refuse(res: http.ServerResponse, verdict: GateVerdict & { ok: false }): void {
  const reason = CLOSE_REASONS[verdict.refusal];
  if (verdict.refusal === 'throttled') res.setHeader('Retry-After', '10');
  textReply(res, reason.http, reason.text);
}

export function createServer(relay: RelayView, options: ServerOptions): { server: http.Server; wss: WebSocketServer; publishers: PublishSockets } {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Every answer says whether a cache may keep it: by default nothing here may be kept
  // (state, errors, the streams); the player's files and pages override this.
  app.use((_req, res, next) => {
    res.setHeader('Cache-Control', 'no-store');
    next();
  });
  const playerPage = playerPageTemplate(options.publicDir, 'index.html');
  const publishPage = playerPageTemplate(options.publicDir, 'publish.html');
  const gate = new AccessGate(new FailureThrottle());

  /** The player page, or why it is refused. With a valid ?token= it sets the cookie that lets the page's other requests in. */
  const servePlayer = async (stream: Stream, req: Request, res: Response, base: string) => {
    res.set({ 'Cache-Control': 'no-cache', 'Content-Security-Policy': frameAncestors(stream.config.access) });
    const verdict = await gate.viewer(stream, req, 'player page');
    if (!verdict.ok) {
      const reason = CLOSE_REASONS[verdict.refusal];
      return res.status(reason.http).type('html').send(refusedPage(stream.name, reason.text));
    }
    const token = typeof req.query.token === 'string' ? req.query.token : null;
    if (stream.config.access.read === 'token' && token) {
      // Lax: sent when the page is opened from a link elsewhere, not on other sites' requests.
      res.cookie(tokenCookieName(stream.name), token, { path: '/', httpOnly: true, sameSite: 'lax' });
    }
    res.type('html').send(playerPage(stream.name, base));
  };
  const onlyStream = relay.streams.size === 1 ? [...relay.streams.keys()][0] : null;

  const streamFor = (match: RegExpExecArray | null): Stream | undefined => (match ? relay.streams.get(match[1]) : undefined);

  /** `GET` or `HEAD /<name>.webm` of a stream that exists: its credentials, then watch(). */
  const serveWatch = (stream: Stream, req: http.IncomingMessage, res: http.ServerResponse, pathname: string): void => {
    for (const [name, value] of Object.entries(corsHeaders(stream.config.access, req.headers.origin))) res.setHeader(name, value);
    gate
      .viewer(stream, req, `GET ${pathname}`)
      .then((verdict) => (verdict.ok ? watch(stream, req, res) : refuse(res, verdict)))
      // Outside express nothing else would catch it, and an unhandled rejection ends the process.
      .catch((error: Error) => {
        log.error(`${stream.name}: GET ${pathname}: ${error.stack ?? error.message}`);
        res.destroy();
      });
  };

  // --- streams ---------------------------------------------------------------------
  // Recordings: /api/recordings/<name>, /recordings/<name>/<file>.webm, /<name>/recordings/.
  app.use(recordingRoutes(relay.streams, gate));
  // Segments for HTTP caches: /<name>/index.json, /<name>/<epoch>/init.webm, /<name>/<epoch>/<seq>.webm.
  // First, so that junk in their shape is a 404 before anything else looks at it.
  // With allow-origins, its origins (and Vary: Origin, which a cache keys its copies by); else any.
  const segments = segmentRoutes(
    (name) => relay.streams.get(name)?.segments,
    (name, origin) => corsHeaders(relay.streams.get(name)?.config.access ?? OPEN_ACCESS, origin),
  );
  app.use((req: Request, res: Response, next) => {
    // A protected stream's segments and index need the same credentials as the stream
    // (the signature covers the stream and the expiry, not the segment: see the README).
    const stream = SEGMENT_PATH.test(req.path) ? relay.streams.get(req.path.split('/')[1]) : undefined;
    if (!stream || stream.config.access.read === 'open') {
      if (!segments(req, res)) next();
      return;
    }
    void gate.viewer(stream, req, `GET ${req.path}`).then((verdict) => {
      if (!verdict.ok) return refuse(res, verdict);
      if (!segments(req, res)) next();
    });
  });
  app.use((req: Request, res: Response, next) => {
    const url = req.path;
    let match: RegExpExecArray | null;
    if ((match = STREAM_PATH.exec(url))) {
      const stream = streamFor(match);
      if (!stream) return textReply(res, 404, `no stream named "${match[1]}"`);
      if (req.method === 'OPTIONS') return preflight(stream, req, res);
      // Only a request in absolute form (`GET http://host/live.webm`) gets here: see the server below.
      if (req.method === 'GET' || req.method === 'HEAD') return serveWatch(stream, req, res, url);
      if (req.method === 'PUT') return void publish(stream, gate, req, res);
      res.set('Allow', 'GET, HEAD, PUT, OPTIONS');
      return textReply(res, 405, 'use GET to watch, PUT to publish');
    }
    if (req.method === 'OPTIONS' && (match = SNAPSHOT_PATH.exec(url)) && streamFor(match)) return preflight(streamFor(match)!, req, res);
    if (req.method !== 'GET' && req.method !== 'HEAD') return next();
    if ((match = PLAYER_PATH.exec(url))) {
      const stream = streamFor(match);
      if (!stream) return next();
      return void servePlayer(stream, req, res, '../');
    }
    if ((match = PUBLISH_PAGE_PATH.exec(url))) {
      const stream = streamFor(match);
      if (!stream) return next();
      if (!stream.config.publishToken) return textReply(res, 404, `stream "${stream.name}" takes no published stream (configure publish: browser with publish-token, or publish: { token: ... })`);
      return res.set({ 'Cache-Control': 'no-cache', 'Content-Security-Policy': "frame-ancestors 'self'" }).type('html').send(publishPage(stream.name, '../'));
    }
    if ((match = SNAPSHOT_PATH.exec(url))) {
      const stream = streamFor(match);
      if (!stream) return textReply(res, 404, `no stream named "${match[1]}"`);
      res.set(corsHeaders(stream.config.access, req.headers.origin));
      return void gate.viewer(stream, req, `GET ${url}`).then(async (verdict) => {
        if (!verdict.ok) return refuse(res, verdict);
        const jpeg = await relay.snapshots.jpeg(stream.name);
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
    void publish(stream, gate, req, res);
  });

  // --- the relay -------------------------------------------------------------------
  app.get('/', (req, res, next) => {
    if (!onlyStream) return next();
    void servePlayer(relay.streams.get(onlyStream)!, req, res, './');
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
  app.get('/api/streams', (req, res) => {
    res.set('Cache-Control', 'no-store').json({ streams: [...relay.streams.values()].map((s) => s.summary(gate.mayWatch(s, req))) });
  });
  app.get('/api/streams/:name', async (req, res) => {
    const stream = relay.streams.get(String(req.params.name));
    if (!stream) return textReply(res, 404, 'no such stream');
    const verdict = await gate.viewer(stream, req, `GET ${req.path}`);
    if (!verdict.ok) return refuse(res, verdict);
    res.set('Cache-Control', 'no-store').json(stream.stats());
  });
  app.get('/metrics', async (_req, res) => {
    const { contentType, body } = await options.metrics();
    res.set('Cache-Control', 'no-store').type(contentType).send(body);
  });
  app.get('/', (_req, res) => res.set('Cache-Control', 'no-cache').sendFile(path.join(options.publicDir, 'streams.html')));
  // The templates behind the player and publish pages, never as plain files: served as
  // is they would skip the stream's gate and its frame-ancestors, so any site could
  // frame a player whose WebSocket then comes from the relay's own origin.
  app.get('/index.html', (req, res) => {
    if (onlyStream) return void servePlayer(relay.streams.get(onlyStream)!, req, res, './');
    res.redirect(302, './');
  });
  app.get('/publish.html', (_req, res) => textReply(res, 404, 'the publish page of a stream is /NAME/publish'));
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

  // A viewer's request to /<name>.webm is answered before express sees it. The request
  // lives as long as the viewer watches, and express's routing keeps about 14 KiB of
  // its own alive with each (an idle HTTP viewer held 26 KiB of the relay's memory, a
  // WebSocket viewer 14). Everything else, and every refusal of an unknown name, goes
  // through the routes above.
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' || req.method === 'HEAD') {
      const url = req.url ?? '';
      const query = url.indexOf('?');
      const pathname = query < 0 ? url : url.slice(0, query);
      const stream = streamFor(STREAM_PATH.exec(pathname));
      // watch() and every refusal set their own Cache-Control.
      if (stream) return serveWatch(stream, req, res, pathname);
    }
    app(req, res);
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 0; // /<name>.webm responses last as long as the viewer watches
  // Idle kept-alive connections stay longer than a cache in front keeps them (Varnish:
  // backend_idle_timeout, 60 s), so it never sends a request on one we just closed.
  server.keepAliveTimeout = 65_000;
  const { wss, publishers } = attachWebSockets(server, relay.streams, options.wsMaxPayloadBytes, gate);
  return { server, wss, publishers };
}

/** CORS preflight of the stream and its snapshot (a page that sends a Range header, say). */
function preflight(stream: Stream, req: Request, res: Response): void {
  res.status(204).set({
    ...corsHeaders(stream.config.access, req.headers.origin),
    'Access-Control-Allow-Methods': 'GET, HEAD',
    'Access-Control-Allow-Headers': 'Range',
    'Access-Control-Max-Age': '600',
  });
  res.end();
}

function refusedPage(name: string, text: string): string {
  const escape = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html><meta charset="utf-8"><title>${escape(name)} · webm-relay</title><link rel="stylesheet" href="/style.css"><main><h1>${escape(name)}</h1><p id="refused">${escape(text)}: open the link you were given.</p></main>\n`;
}

const WATCH_HEADERS: [string, string][] = [
  ['Content-Type', 'video/webm'],
  ['Cache-Control', 'no-store'],
  // nginx passes each chunk on at once instead of buffering it (200-300 ms measured on audio).
  ['X-Accel-Buffering', 'no'],
  ['Accept-Ranges', 'none'],
  ['X-Content-Type-Options', 'nosniff'],
  // The response lasts as long as the stream: when it ends, so does the connection.
  ['Connection', 'close'],
];

/** `GET /<name>.webm`: one endless response, init segment then clusters from a keyframe. */
function watch(stream: Stream, req: http.IncomingMessage, res: http.ServerResponse): void {
  // The viewer may have gone while its credentials were checked (a throttled address waits).
  if (req.socket.destroyed) return;
  res.statusCode = 200;
  for (const [name, value] of WATCH_HEADERS) res.setHeader(name, value);
  if (req.method === 'HEAD') {
    if (stream.hub.full) res.statusCode = 503;
    res.end();
    return;
  }
  // A Range request (browsers send `bytes=0-`) gets the live stream from its start, as 200.
  res.socket?.setNoDelay(true);
  const viewer = stream.hub.add(new HttpTransport(res));
  if (!viewer) {
    res.setHeader('Retry-After', '10');
    textReply(res, 503, 'too many viewers');
    return;
  }
  res.flushHeaders();
  res.once('close', () => stream.hub.remove(viewer));
}

/** `PUT /<name>.webm` with `Authorization: Bearer TOKEN`: a producer from anywhere. */
async function publish(stream: Stream, gate: AccessGate, req: Request, res: Response): Promise<void> {
  const token = stream.config.publishToken;
  if (!token) {
    textReply(res, 404, `stream "${stream.name}" takes no published stream (configure publish: browser with publish-token, or publish: { token: ... }${stream.name === 'live' ? ' or start the relay with --ingest-token' : ''})`);
    return;
  }
  const presented = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? null;
  const verdict = await gate.publisher(stream, presented, req.socket.remoteAddress ?? '?', `PUT ${req.path}`);
  if (!verdict.ok) {
    // A refused producer's body is not read: close the connection after the answer.
    res.set('Connection', 'close');
    if (verdict.refusal === 'throttled') return refuse(res, verdict);
    res.set('WWW-Authenticate', 'Bearer');
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
function playerPageTemplate(publicDir: string, file: string): (name: string, base: string) => string {
  let template: string | null = null;
  return (name, base) => {
    template ??= fs.readFileSync(path.join(publicDir, file), 'utf8');
    const head = `<head>\n<base href="${base}">\n<meta name="webm-relay-stream" content="${name}">`;
    return template.replace('<head>', head);
  };
}
