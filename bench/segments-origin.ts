/**
 * The origin for bench/segments.ts, in a process of its own so that its CPU can be
 * measured: the relay's splitter, normalizer, hub and segmenter behind one HTTP port
 * (`/live.webm`, `/live/index.json`, `/live/<epoch>/<seq>.webm`), fed by a producer on
 * a TCP port. A second port answers `GET /starts`: when each segment's keyframe
 * cluster came in, for delivery latency. Prints its ports as one JSON line.
 */
import http from 'node:http';
import type net from 'node:net';
import { startOrigin } from '../test/segments/standalone.js';

const origin = await startOrigin({ limits: { maxViewers: 100_000 }, segments: { maxParked: 100_000 } });
const stats = http.createServer((_req, res) => {
  const s = origin.segmenter;
  const starts: Record<number, number> = {};
  for (const segment of s.segments) starts[segment.seq] = segment.startedAt;
  if (s.partial) starts[s.partial.seq] = s.partial.startedAt;
  res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ starts, stats: s.stats(), hub: origin.hub.stats() }));
});
await new Promise<void>((resolve) => stats.listen(0, '127.0.0.1', resolve));
console.log(JSON.stringify({ port: origin.port, ingestPort: origin.ingestPort, statsPort: (stats.address() as net.AddressInfo).port }));
process.on('SIGTERM', () => void origin.close().then(() => process.exit(0)));
