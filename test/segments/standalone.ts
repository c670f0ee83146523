/**
 * A bare origin for the segment tests: the real splitter, normalizer, hub and segmenter
 * in this process, fed from a TCP port (a real producer) or from recorded bytes, and
 * served by a plain `http.createServer` with `/<name>.webm` (the hub's HTTP transport)
 * and the segment routes.
 */
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { Hub, type HubOptions } from '../../src/hub/hub.js';
import type { InitSegment } from '../../src/normalizer/init-segment.js';
import { Normalizer, type NormalizedStream } from '../../src/normalizer/normalizer.js';
import { segmentRoutes } from '../../src/segments/routes.js';
import { Segmenter, type SegmenterOptions } from '../../src/segments/segmenter.js';
import { HttpTransport } from '../../src/server/transports.js';
import type { StreamSink } from '../../src/stream/events.js';
import { WebmSplitter } from '../../src/webm/splitter.js';
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

/** The normalizer's output as the stage contract's events, to any number of sinks. */
class SinkFan implements NormalizedStream {
  private version = 0;
  private seq = 0;
  constructor(private readonly sinks: StreamSink[]) {}
  init(init: InitSegment): void {
    const event = { segment: init, version: ++this.version };
    for (const s of this.sinks) s.initChanged(event);
  }
  cluster(bytes: Buffer, timecode: number, keyframe: boolean): void {
    const event = { bytes, seq: this.seq++, timecode, keyframe };
    for (const s of this.sinks) s.clusterStarted(event);
  }
  block(parts: Buffer[], track: number, timecode: number): void {
    const size = parts.reduce((n, p) => n + p.length, 0);
    const event = { parts, track, timecode, keyframe: false, video: false, size };
    for (const s of this.sinks) s.block(event);
  }
}

/** The hub as one sink among others. */
function hubSink(hub: Hub): StreamSink {
  return {
    initChanged: (e) => hub.init(e.segment),
    clusterStarted: (e) => hub.cluster(e.bytes, e.timecode, e.keyframe),
    block: (e) => hub.block(e.parts, e.track),
    flush: () => hub.flush(),
    producerStarted: () => hub.producerStarted(),
    producerEnded: () => hub.producerEnded(),
    close: (reason) => hub.close(reason),
  };
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

export async function startOrigin(options: { name?: string; segments?: Partial<SegmenterOptions>; hub?: Partial<HubOptions> } = {}): Promise<Origin> {
  const name = options.name ?? 'live';
  const hub = new Hub({ producerGraceMs: 200, ...options.hub });
  const segmenter = new Segmenter(options.segments);
  const sinks = [hubSink(hub), segmenter];
  const normalizer = new Normalizer(new SinkFan(sinks));

  /** One producer: its own splitter, the shared normalizer (as the relay's ingest does). */
  const producer = () => {
    const splitter = new WebmSplitter({
      header: (header) => {
        normalizer.header(header);
        for (const s of sinks) s.producerStarted('test');
      },
      cluster: () => {},
      block: (block) => normalizer.block(block),
      end: () => {},
      error: () => {},
    });
    return {
      write: (chunk: Buffer) => {
        splitter.feed(chunk);
        for (const s of sinks) s.flush();
      },
      end: () => {
        splitter.end();
        normalizer.flush();
        for (const s of sinks) s.flush();
        for (const s of sinks) s.producerEnded('test');
      },
    };
  };

  const ingest = net.createServer((socket) => {
    const p = producer();
    socket.on('data', (chunk: Buffer) => p.write(chunk));
    socket.once('close', () => p.end());
    socket.on('error', () => {});
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
      const p = producer();
      for (let at = 0; at < bytes.length; at += chunk) p.write(bytes.subarray(at, at + chunk));
      return p;
    },
    async close() {
      for (const s of sinks) s.close('test over');
      ingest.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
