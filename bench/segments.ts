/**
 * What segment readers behind Varnish cost the relay: with 1, 100 and 1000 readers
 * through varnishd (deploy/varnish/webm-relay.vcl), the relay's CPU and bytes out
 * should stay flat; Varnish's CPU per reader is shown next to the relay's own CPU per
 * direct push viewer (`/live.webm`); and delivery latency, from a segment's keyframe
 * cluster arriving at the ingest to its first bytes at each reader, through Varnish
 * and directly. Options: see USAGE (`--help`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { encoderArgs } from '../src/source/gst-args.js';
import { PRODUCER } from '../test/helpers/faults.js';
import { readerAgent } from '../test/segments/readers.js';
import { startVarnish, type Varnish } from '../test/segments/varnish.js';
import { WebmSplitter } from '../src/webm/splitter.js';
import { cpuSeconds, machine, quantile, sleep } from './fanout-lib.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(HERE, '../src/cli.js');

const { values: argv } = parseArgs({
  options: {
    readers: { type: 'string' },
    direct: { type: 'string' },
    window: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
const USAGE = `usage: node dist/bench/segments.js [options]   (npm run bench:segments)

  --readers LIST   segment readers through Varnish, one measurement each
                   (SEGMENTS_READERS, default 1,100,1000)
  --direct N       direct segment readers and direct /live.webm viewers, for the
                   comparison rows (SEGMENTS_DIRECT, default 100)
  --window S       measurement window per row, seconds (SEGMENTS_WINDOW_S, default 10)

Needs gst-launch-1.0 and varnishd (run as root: varnishd -j none). The producer is
the relay's own GStreamer pipeline (320x240, 30 fps, keyframe every second).`;
if (argv.help) {
  console.log(USAGE);
  process.exit(0);
}
const READERS = (argv.readers ?? process.env.SEGMENTS_READERS ?? '1,100,1000').split(',').map(Number).filter((n) => n > 0);
const DIRECT = Number(argv.direct ?? process.env.SEGMENTS_DIRECT ?? 100);
const WINDOW_S = Number(argv.window ?? process.env.SEGMENTS_WINDOW_S ?? 10);

const children: ChildProcess[] = [];
let varnish: Varnish | null = null;
async function cleanup(): Promise<void> {
  await varnish?.stop();
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
}
process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));

/** wchar of a process: bytes it wrote (sockets included). */
function bytesWritten(pid: number): number {
  try {
    return Number(/^wchar:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** CPU seconds of every process in a process group (varnishd's manager and cache process). */
function groupCpuSeconds(pgid: number): number {
  let total = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid) total += cpuSeconds(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

function getJson<T>(url: string): Promise<T> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString()) as T));
    }).on('error', reject);
  });
}

/** The Timecode of the Cluster a segment starts with (ticks), or null if `bytes` is too short. */
function clusterTimecode(bytes: Buffer): number | null {
  // Cluster ID (4 bytes), its size (a vint), then the Timecode element: E7, size, value.
  if (bytes.length < 6 || bytes.readUInt32BE(0) !== 0x1f43b675) return null;
  const sizeLength = Math.clz32(bytes[4]) - 23;
  let at = 4 + sizeLength;
  if (bytes[at] !== 0xe7 || at + 2 > bytes.length) return null;
  const length = bytes[at + 1] & 0x7f;
  at += 2;
  if (at + length > bytes.length) return null;
  let value = 0;
  for (let i = 0; i < length; i++) value = value * 256 + bytes[at + i];
  return value;
}

/**
 * A reader as the player reads: from the segment being produced on, N+1 asked when N's
 * response begins, until `stopAt`. Records when each segment's first bytes arrive, by
 * the timecode of the cluster it starts with.
 */
function chainReader(base: string, agent: http.Agent, stopAt: number, arrivals: number[][]): Promise<{ errors: number }> {
  return new Promise((resolve) => {
    let errors = 0;
    let open = 0;
    const finish = () => {
      if (open === 0) resolve({ errors });
    };
    const get = (url: string, onBody: (res: http.IncomingMessage) => void) => {
      open++;
      const req = http.get(url, { agent }, (res) => {
        onBody(res);
        res.once('end', () => {
          open--;
          finish();
        });
        res.once('aborted', () => errors++);
      });
      req.on('error', () => {
        errors++;
        open--;
        finish();
      });
    };
    get(`${base}index.json`, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => {
        const index = JSON.parse(Buffer.concat(chunks).toString()) as { epoch: string; partial: { seq: number } };
        const read = (seq: number) =>
          get(`${base}${index.epoch}/${seq}.webm`, (r) => {
            if (r.statusCode !== 200) {
              errors++;
              r.resume();
              return;
            }
            if (Date.now() < stopAt) read(seq + 1);
            let head = Buffer.alloc(0);
            let done = false;
            r.on('data', (c: Buffer) => {
              if (done) return;
              head = Buffer.concat([head, c]);
              const timecode = clusterTimecode(head);
              if (timecode !== null) {
                arrivals.push([timecode, Date.now()]);
                done = true;
              } else if (head.length > 64) done = true;
            });
          });
        read(index.partial.seq + 1);
      });
    });
  });
}

/**
 * Stands between the producer and the relay's ingest port and notes when each video
 * keyframe (where a segment starts) passes: the start of delivery latency.
 */
async function timingProxy(relayIngestPort: number, keyframeAt: Map<number, number>): Promise<net.Server> {
  const server = net.createServer((producer) => {
    const relay = net.connect(relayIngestPort, '127.0.0.1');
    const video = new Set<number>();
    let msPerTick = 1;
    const splitter = new WebmSplitter({
      header: (h) => {
        msPerTick = h.info.timecodeScale / 1e6;
        for (const t of h.info.tracks) if (t.kind === 'video') video.add(t.number);
      },
      cluster: () => {},
      block: (b) => {
        if (b.keyframe && video.has(b.track)) keyframeAt.set(Math.round(b.timecode * msPerTick), Date.now());
      },
      end: () => {},
      error: () => {},
    });
    producer.on('data', (chunk: Buffer) => {
      relay.write(chunk);
      splitter.feed(chunk);
    });
    producer.once('close', () => relay.end());
    relay.once('close', () => producer.destroy());
    producer.on('error', () => {});
    relay.on('error', () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

interface Row {
  label: string;
  readers: number;
  relayCpuPct: number;
  relayBytesOutPerS: number;
  cachePct: number | null;
  p50: number | null;
  p99: number | null;
  errors: number;
}

async function measureReaders(label: string, base: string, n: number, relayPid: number, keyframeAt: Map<number, number>, varnishPid: number | null): Promise<Row> {
  const agent = readerAgent();
  const arrivals: number[][] = [];
  const startAt = Date.now();
  // Readers connect first; the window starts once every one is under way.
  const stopAt = startAt + 2000 + WINDOW_S * 1000;
  const readers = Array.from({ length: n }, () => chainReader(base, agent, stopAt, arrivals));
  await sleep(2000);
  const cpu0 = cpuSeconds(relayPid);
  const out0 = bytesWritten(relayPid);
  const v0 = varnishPid ? groupCpuSeconds(varnishPid) : 0;
  const t0 = Date.now();
  await sleep(WINDOW_S * 1000);
  const seconds = (Date.now() - t0) / 1000;
  const cpu = cpuSeconds(relayPid) - cpu0;
  const out = bytesWritten(relayPid) - out0;
  const vcpu = varnishPid ? groupCpuSeconds(varnishPid) - v0 : 0;
  const results = await Promise.race([Promise.all(readers), sleep(20_000).then(() => null)]);
  agent.destroy();
  const latencies: number[] = [];
  for (const [timecode, at] of arrivals) {
    // The relay keeps the first producer's timestamps; a keyframe may be moved by a tick or two.
    let start: number | undefined;
    for (let d = 0; d <= 40 && start === undefined; d++) start = keyframeAt.get(timecode - d) ?? keyframeAt.get(timecode + d);
    if (start !== undefined && at >= t0) latencies.push(at - start);
  }
  latencies.sort((a, b) => a - b);
  return {
    label,
    readers: n,
    relayCpuPct: (cpu / seconds) * 100,
    relayBytesOutPerS: out / seconds,
    cachePct: varnishPid ? (vcpu / seconds) * 100 : null,
    p50: latencies.length ? quantile(latencies, 0.5) : null,
    p99: latencies.length ? quantile(latencies, 0.99) : null,
    errors: results ? results.reduce((sum, x) => sum + x.errors, 0) : -1,
  };
}

/** `n` plain `/live.webm` viewers that read and discard, for the relay's CPU per push viewer. */
async function measurePush(url: string, n: number, relayPid: number): Promise<Row> {
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
  const requests = Array.from({ length: n }, () => {
    const r = http.get(url, { agent }, (res) => res.resume());
    r.on('error', () => {});
    return r;
  });
  await sleep(2000);
  const cpu0 = cpuSeconds(relayPid);
  const out0 = bytesWritten(relayPid);
  const t0 = Date.now();
  await sleep(WINDOW_S * 1000);
  const seconds = (Date.now() - t0) / 1000;
  const row: Row = {
    label: 'direct /live.webm viewers',
    readers: n,
    relayCpuPct: ((cpuSeconds(relayPid) - cpu0) / seconds) * 100,
    relayBytesOutPerS: (bytesWritten(relayPid) - out0) / seconds,
    cachePct: null,
    p50: null,
    p99: null,
    errors: 0,
  };
  for (const r of requests) r.destroy();
  agent.destroy();
  return row;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function main(): Promise<void> {
  const ingestPort = await freePort();
  const relayProcess = spawn(
    process.execPath,
    [CLI, '--port', '0', '--host', '127.0.0.1', '--ingest', `tcp://127.0.0.1:${ingestPort}`, '--max-viewers', '100000'],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, WEBM_RELAY_LOG: 'info' } },
  );
  children.push(relayProcess);
  const port = await new Promise<number>((resolve, reject) => {
    let log = '';
    relayProcess.stderr!.setEncoding('utf8').on('data', (t: string) => {
      log += t;
      const match = /serving http:\/\/[^:]+:(\d+)\//.exec(log);
      if (match) resolve(Number(match[1]));
    });
    relayProcess.once('exit', (code) => reject(new Error(`relay exited with ${code}:\n${log}`)));
  });
  const keyframeAt = new Map<number, number>();
  const proxy = await timingProxy(ingestPort, keyframeAt);
  const producer = spawn('gst-launch-1.0', encoderArgs(PRODUCER, (proxy.address() as net.AddressInfo).port), { stdio: 'ignore' });
  children.push(producer);
  const origin = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    const stats = await getJson<{ segments: { segments: number } }>(`${origin}/api/streams/live`);
    if (stats.segments.segments >= 2) break;
    await sleep(200);
  }
  varnish = await startVarnish(port, { storage: 'malloc,256m', threads: Math.max(300, Math.max(...READERS, DIRECT) + 100) });
  const relayPid = relayProcess.pid!;
  const rows: Row[] = [];

  const idle = await measureReaders('idle (no readers)', `${origin}/live/`, 0, relayPid, keyframeAt, varnish.process.pid!);
  rows.push({ ...idle, p50: null, p99: null });
  for (const n of READERS) {
    rows.push(await measureReaders('segment readers through Varnish', `${varnish.url}/live/`, n, relayPid, keyframeAt, varnish.process.pid!));
  }
  if (DIRECT > 0) {
    rows.push(await measureReaders('segment readers, direct', `${origin}/live/`, DIRECT, relayPid, keyframeAt, null));
    rows.push(await measurePush(`${origin}/live.webm`, DIRECT, relayPid));
  }
  proxy.close();

  const m = machine();
  console.log(`\nbench:segments  ${m.cpu}, ${m.cores} cores, Node ${m.node}, ${m.kernel}, GStreamer ${m.gstreamer}, varnishd 7.1`);
  console.log(`stream: 320x240 VP8 400 kbit/s + Opus 48 kbit/s, keyframe every 1 s; window ${WINDOW_S} s per row\n`);
  const fmt = (x: number | null, digits = 1) => (x === null || !Number.isFinite(x) ? '–' : x.toFixed(digits));
  console.log('| readers | how | relay CPU % | relay out KB/s | Varnish CPU % | Varnish CPU % per reader | latency p50 ms | p99 ms | errors |');
  console.log('| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows) {
    const perReader = r.cachePct !== null && r.readers > 0 ? r.cachePct / r.readers : null;
    console.log(
      `| ${r.readers} | ${r.label} | ${fmt(r.relayCpuPct)} | ${fmt(r.relayBytesOutPerS / 1024)} | ${fmt(r.cachePct)} | ${fmt(perReader, 3)} | ${fmt(r.p50, 0)} | ${fmt(r.p99, 0)} | ${r.errors} |`,
    );
  }
  const push = rows.find((r) => r.label.startsWith('direct /live.webm'));
  if (push) console.log(`\nrelay CPU per direct /live.webm viewer: ${fmt((push.relayCpuPct - idle.relayCpuPct) / push.readers, 3)} % of a core`);
  const through = rows.filter((r) => r.label.includes('Varnish'));
  if (through.length > 1) {
    const first = through[0];
    const last = through[through.length - 1];
    console.log(`relay CPU at ${last.readers} readers / at ${first.readers}: ${fmt(last.relayCpuPct / first.relayCpuPct, 2)}x; bytes out: ${fmt(last.relayBytesOutPerS / first.relayBytesOutPerS, 2)}x`);
  }
  console.log(`\n${JSON.stringify({ machine: m, windowS: WINDOW_S, rows })}`);
  await cleanup();
}

main().catch(async (error) => {
  console.error(error);
  await cleanup();
  process.exit(1);
});
