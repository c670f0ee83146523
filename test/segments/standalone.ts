/**
 * A bare origin for the segment tests: the relay's `Stream` (splitter, normalizer, hub,
 * segmenter) in this process, fed from a TCP port (a real producer) or synchronously
 * from recorded bytes, served by a plain `http.createServer` with `/<name>.webm` (the
 * hub's HTTP transport), the segment routes and the player page, and nothing else: no
 * WebSocket (the player must fall back to segments), and a log of every request path.
 */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import { DEFAULT_LIMITS, OPEN_ACCESS, type StreamLimits } from '../../src/config/options.js';
import type { Hub } from '../../src/hub/hub.js';
import { ViewerBudget } from '../../src/hub/viewers.js';
import { segmentRoutes } from '../../src/segments/routes.js';
import type { Segmenter, SegmenterOptions } from '../../src/segments/segmenter.js';
import { HttpTransport } from '../../src/server/transports.js';
import { Stream } from '../../src/stream/stream.js';
import { ROOT } from '../helpers/relay.js';

const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };

/** The player page and its scripts, as the relay serves them (no WebSocket here: the player must fall back). */
async function servePublic(urlPath: string, res: http.ServerResponse): Promise<boolean> {
  const file = urlPath === '/' ? 'index.html' : urlPath.slice(1);
  if (!/^(js\/)?[a-z-]+\.(html|js|css)$/.test(file)) return false;
  try {
    const body = await readFile(path.join(ROOT, 'public', file));
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)], 'Cache-Control': 'no-store' }).end(body);
    return true;
  } catch {
    return false;
  }
}

export interface Origin {
  url: string;
  port: number;
  ingestPort: number;
  hub: Hub;
  segmenter: Segmenter;
  /** Origin requests seen, by path. */
  requests: Map<string, number>;
  /** Feeds recorded bytes as one producer, `chunk` bytes per read; returns its end. */
  feed(bytes: Buffer, chunk?: number): { end(): void };
  close(): Promise<void>;
}

export async function startOrigin(options: { name?: string; segments?: Partial<SegmenterOptions>; limits?: Partial<StreamLimits> } = {}): Promise<Origin> {
  const name = options.name ?? 'live';
  const stream = new Stream(
    { name, producer: { kind: 'publish' }, publishToken: null, access: OPEN_ACCESS, limits: { ...DEFAULT_LIMITS, producerGraceMs: 200, ...options.limits } },
    { budget: new ViewerBudget(Infinity), gstLaunch: 'gst-launch-1.0', fatal: () => {} },
  );
  // Bounds of the stream's own segmenter that a test wants smaller.
  Object.assign(stream.segments.options, options.segments);
  const hub = stream.hub;
  const segmenter = stream.segments;

  const ingest = net.createServer((socket) => {
    socket.on('error', () => {});
    if (!stream.attach(socket, `tcp ${socket.remotePort}`, () => socket.destroy())) socket.destroy();
  });
  await new Promise<void>((resolve) => ingest.listen(0, '127.0.0.1', resolve));

  const requests = new Map<string, number>();
  const routes = segmentRoutes((n) => (n === name ? segmenter : undefined));
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    requests.set(path, (requests.get(path) ?? 0) + 1);
    if (routes(req, res)) return;
    if (path === `/${name}.webm`) {
      res.setHeader('Content-Type', 'video/webm');
      res.setHeader('Cache-Control', 'no-store');
      // As the relay does: the head goes out before the hub may write to the socket directly.
      res.flushHeaders();
      const viewer = hub.add(new HttpTransport(res));
      if (!viewer) return void res.end();
      res.once('close', () => hub.remove(viewer));
      return;
    }
    void servePublic(path, res).then((served) => {
      if (!served) res.writeHead(404).end();
    });
  });
  // Longer than a cache's idle backend connections, so it never reuses one we closed.
  server.keepAliveTimeout = 75_000;
  server.requestTimeout = 0;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    ingestPort: (ingest.address() as net.AddressInfo).port,
    hub,
    segmenter,
    requests,
    feed(bytes, chunk = 4096) {
      // A producer whose reads arrive synchronously, so that a test sees their effect at once.
      const producer = new EventEmitter();
      if (!stream.attach(producer as unknown as Readable, 'recording', () => {})) throw new Error('another producer is attached');
      for (let at = 0; at < bytes.length; at += chunk) producer.emit('data', bytes.subarray(at, at + chunk));
      return { end: () => producer.emit('end') };
    },
    async close() {
      await stream.stop();
      ingest.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
