/**
 * The viewers' side of bench/fanout.ts, in a process of its own: replays the recording
 * into each stream of the server under test in real time (when given ingests), holds
 * N reader sockets spread over the streams that read and discard, and times each
 * Cluster's arrival against the moment its bytes were written to that stream's ingest
 * (same process, same clock).
 *
 * Config: JSON in argv[2]. Control on stdin, one word a line: `start` (begin the
 * measurement window), `stop` (end it, print the result), `quit`. Status on stdout,
 * one JSON object a line.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import readline from 'node:readline';
import { quantile, sendPlan } from './fanout-lib.js';

export interface ReadersConfig {
  /** Where viewers connect. `http`: GET /<name>.webm; `ws`: WebSocket /<name>; `raw`: connect and read (tcpserversink). */
  protocol: 'http' | 'ws' | 'raw';
  port: number;
  /** Readers in all; reader i watches stream i % streams.length (or the first, see `viewersOn`). */
  viewers: number;
  /** `all`: readers spread evenly over the streams; `first`: all on the first, the others live with none. */
  viewersOn?: 'all' | 'first';
  /**
   * The streams: the name in their URLs, where their replay of the recording goes
   * (`tcp:PORT` or a FIFO path; absent: the server encodes itself), and for a server
   * with a port per stream (the floor), the stream's own viewer port.
   */
  streams: { name: string; ingest?: string; port?: number }[];
  recording?: string;
  /**
   * The replays start this far apart in all (stream k at k/S of it): independent live
   * sources are not in step, and replays in step would hand the server every
   * stream's frame in the same instant.
   */
  spreadMs?: number;
  /**
   * Connect viewers once this long after the first media write; -1: before it (after
   * the header), then report `connected` and start the media on the `media` command.
   */
  connectAfterMs: number;
}

const config = JSON.parse(process.argv[2]) as ReadersConfig;
const out = (message: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(message)}\n`);

// --- sender ------------------------------------------------------------------------

/** One stream as the readers see it: when each cluster went into its ingest. */
interface StreamClock {
  name: string;
  /** Where its readers connect. */
  port: number;
  /** Cluster timecode (ms) -> when its bytes went into the ingest, and when a reordering relay could release it. */
  sentAt: Map<number, number>;
  releasedAt: Map<number, number>;
}
const clocks: StreamClock[] = config.streams.map((s) => ({ name: s.name, port: s.port ?? config.port, sentAt: new Map(), releasedAt: new Map() }));
let mediaStart = -1;
let senderDone = false;

async function openIngest(ingest: string): Promise<net.Socket> {
  let sink: net.Socket;
  if (ingest.startsWith('tcp:')) {
    sink = net.connect({ host: '127.0.0.1', port: Number(ingest.slice(4)), noDelay: true });
    await new Promise<void>((resolve, reject) => sink.once('connect', resolve).once('error', reject));
  } else {
    const fd = fs.openSync(ingest, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    sink = new net.Socket({ fd, readable: false, writable: true });
  }
  sink.on('error', (error) => out({ type: 'sender-error', ingest, message: error.message }));
  return sink;
}

/** Opens every stream's ingest and writes the stream header; resolves with a function that replays the media into all. */
async function openSenders(): Promise<() => Promise<void>> {
  const bytes = fs.readFileSync(config.recording!);
  const plan = sendPlan(bytes);
  const sinks = await Promise.all(config.streams.map((s) => openIngest(s.ingest!)));
  for (const sink of sinks) sink.write(bytes.subarray(0, plan.headerEnd));
  return () => replay(sinks, bytes, plan);
}

/** The same paced plan into every sink, stream k offset by k/S of the spread. */
async function replay(sinks: net.Socket[], bytes: Buffer, plan: ReturnType<typeof sendPlan>): Promise<void> {
  const start = performance.now() + 50;
  mediaStart = start;
  const spread = config.spreadMs ?? 0;
  const replays = sinks.map((sink, k) => ({ sink, clock: clocks[k], start: start + (k * spread) / sinks.length, next: 0 }));
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      let due = Infinity;
      for (const r of replays) {
        while (r.next < plan.writes.length && r.start + plan.writes[r.next].at <= now) {
          const w = plan.writes[r.next++];
          r.sink.write(bytes.subarray(w.start, w.end));
          const t = performance.now();
          for (const tc of w.marks) if (!r.clock.sentAt.has(tc)) r.clock.sentAt.set(tc, t);
          for (const tc of w.releases) r.clock.releasedAt.set(tc, t);
        }
        if (r.next < plan.writes.length) due = Math.min(due, r.start + plan.writes[r.next].at);
      }
      if (due === Infinity) return resolve();
      setTimeout(tick, Math.max(0, due - performance.now()));
    };
    setTimeout(tick, 50);
  });
  senderDone = true;
  out({ type: 'sent', writes: plan.writes.length * sinks.length });
  // Keep the ingests open: a producer that ends starts the relay's grace period, not what we measure.
}

// --- readers -----------------------------------------------------------------------

const CLUSTER_ID = Buffer.from([0x1f, 0x43, 0xb6, 0x75]);
/** Cluster ID, 8-byte size, Timecode ID, 1-byte size, up to 8 bytes: 22. */
const TAIL = 32;

let measuring = false;
const latencies: number[] = [];
const fanoutLatencies: number[] = [];
let unmatched = 0;
let errors = 0;
let closed = 0;

class Reader {
  socket!: net.Socket;
  bytes = 0;
  windowBytes = 0;
  connected = false;
  /** 0 response head; HTTP: 1 chunk size line, 2 chunk data, 3 CRLF after data; WebSocket: 4 frame header, 5 frame payload. */
  private state = 0;
  private remaining = 0;
  private line = '';
  private readonly frameHead = Buffer.alloc(10);
  private frameHeadLength = 0;
  private frameIsMedia = false;
  /** The last payload bytes, for IDs and timecodes cut across reads. */
  private readonly tail = Buffer.alloc(TAIL * 2);
  private tailLength = 0;
  private payloadOffset = 0;
  private handledUpTo = -1;

  constructor(readonly stream: StreamClock) {
    if (config.protocol === 'raw') {
      this.state = 2;
      this.remaining = Infinity;
    }
  }

  /** Bytes as read from the socket. */
  onData(buf: Buffer, start: number, end: number): void {
    this.bytes += end - start;
    if (measuring) this.windowBytes += end - start;
    let i = start;
    while (i < end) {
      switch (this.state) {
        case 0: {
          const text = buf.toString('latin1', i, end);
          this.line += text;
          const at = this.line.indexOf('\r\n\r\n');
          if (at < 0) return;
          const status = /^HTTP\/1\.1 (\d+)/.exec(this.line)?.[1];
          if (status !== (config.protocol === 'ws' ? '101' : '200')) {
            errors++;
            this.socket.destroy();
            return;
          }
          const chunked = /transfer-encoding:\s*chunked/i.test(this.line.slice(0, at));
          i = end - (this.line.length - (at + 4));
          this.line = '';
          this.state = config.protocol === 'ws' ? 4 : chunked ? 1 : 2;
          this.remaining = chunked ? 0 : Infinity;
          break;
        }
        case 4: {
          // Server frames are unmasked: 2 bytes, then a 2- or 8-byte length for longer payloads.
          this.frameHead[this.frameHeadLength++] = buf[i++];
          if (this.frameHeadLength < 2) break;
          const length7 = this.frameHead[1] & 0x7f;
          const headLength = length7 === 126 ? 4 : length7 === 127 ? 10 : 2;
          if (this.frameHeadLength < headLength) break;
          this.remaining = length7 === 126 ? this.frameHead.readUInt16BE(2) : length7 === 127 ? Number(this.frameHead.readBigUInt64BE(2)) : length7;
          const opcode = this.frameHead[0] & 0x0f;
          this.frameIsMedia = opcode === 2 || opcode === 0;
          this.frameHeadLength = 0;
          if (this.remaining > 0) this.state = 5;
          break;
        }
        case 5: {
          const take = Math.min(end - i, this.remaining);
          if (this.frameIsMedia) this.payload(buf, i, i + take);
          i += take;
          this.remaining -= take;
          if (this.remaining === 0) this.state = 4;
          break;
        }
        case 1: {
          const nl = buf.indexOf(10, i);
          if (nl < 0 || nl >= end) {
            this.line += buf.toString('latin1', i, end);
            return;
          }
          this.line += buf.toString('latin1', i, nl);
          this.remaining = parseInt(this.line, 16);
          this.line = '';
          i = nl + 1;
          this.state = this.remaining === 0 ? 0 : 2;
          break;
        }
        case 2: {
          const take = Math.min(end - i, this.remaining);
          this.payload(buf, i, i + take);
          i += take;
          if (config.protocol === 'http') {
            this.remaining -= take;
            if (this.remaining === 0) {
              this.state = 3;
              this.remaining = 2;
            }
          }
          break;
        }
        case 3: {
          const take = Math.min(end - i, this.remaining);
          i += take;
          this.remaining -= take;
          if (this.remaining === 0) this.state = 1;
          break;
        }
      }
    }
  }

  private payload(buf: Buffer, start: number, end: number): void {
    const now = performance.now();
    // IDs starting in the tail (cut by the previous read, or too near its end to parse).
    if (this.tailLength > 0) {
      const extra = Math.min(TAIL, end - start);
      buf.copy(this.tail, this.tailLength, start, start + extra);
      const joined = this.tail.subarray(0, this.tailLength + extra);
      let at = joined.indexOf(CLUSTER_ID);
      while (at >= 0 && at < this.tailLength) {
        this.found(joined, at, this.payloadOffset - this.tailLength + at, now);
        at = joined.indexOf(CLUSTER_ID, at + 1);
      }
    }
    const view = buf.subarray(start, end);
    let at = view.indexOf(CLUSTER_ID);
    while (at >= 0) {
      this.found(view, at, this.payloadOffset + at, now);
      at = view.indexOf(CLUSTER_ID, at + 1);
    }
    // Keep the last TAIL bytes.
    const length = end - start;
    if (length >= TAIL) {
      buf.copy(this.tail, 0, end - TAIL, end);
      this.tailLength = TAIL;
    } else {
      const keep = Math.min(this.tailLength, TAIL - length);
      this.tail.copy(this.tail, 0, this.tailLength - keep, this.tailLength);
      buf.copy(this.tail, keep, start, end);
      this.tailLength = keep + length;
    }
    this.payloadOffset += length;
  }

  private found(bytes: Buffer, at: number, streamOffset: number, now: number): void {
    if (streamOffset <= this.handledUpTo) return;
    const timecode = readClusterTimecode(bytes, at);
    if (timecode === INCOMPLETE) return; // again with the next read, from the tail
    this.handledUpTo = streamOffset;
    if (timecode < 0 || !measuring) return;
    const sent = this.stream.sentAt.get(timecode);
    if (sent === undefined) {
      unmatched++;
      return;
    }
    latencies.push(now - sent);
    const released = this.stream.releasedAt.get(timecode);
    // Released after it arrived: the server did not wait for it (tcpserversink).
    fanoutLatencies.push(now - (released !== undefined && released < now ? Math.max(sent, released) : sent));
  }
}

const INCOMPLETE = -2;
/** The timecode after a Cluster ID at `at`, in ms (timecode scale 1 ms), -1 if it is not a cluster header. */
function readClusterTimecode(b: Buffer, at: number): number {
  let p = at + 4;
  if (p >= b.length) return INCOMPLETE;
  const sizeLength = Math.clz32(b[p]) - 23;
  if (sizeLength < 1 || sizeLength > 8) return -1;
  p += sizeLength;
  if (p + 2 > b.length) return INCOMPLETE;
  if (b[p] !== 0xe7) return -1;
  const length = b[p + 1] & 0x7f;
  if ((b[p + 1] & 0x80) === 0 || length < 1 || length > 8) return -1;
  p += 2;
  if (p + length > b.length) return INCOMPLETE;
  let value = 0;
  for (let k = 0; k < length; k++) value = value * 256 + b[p + k];
  return value;
}

const readers: Reader[] = [];
/** One receive buffer for every socket: data is looked at synchronously and dropped. */
const shared = Buffer.alloc(256 << 10);

function connect(reader: Reader, attempt = 0): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({
      host: '127.0.0.1',
      port: reader.stream.port,
      onread: {
        buffer: shared,
        callback: (n: number, buf: Uint8Array) => {
          reader.onData(buf as Buffer, 0, n);
          return true;
        },
      },
    });
    reader.socket = socket;
    socket.once('connect', () => {
      reader.connected = true;
      if (config.protocol === 'http') socket.write(`GET /${reader.stream.name}.webm HTTP/1.1\r\nHost: 127.0.0.1:${config.port}\r\nUser-Agent: fanout-bench\r\n\r\n`);
      if (config.protocol === 'ws') {
        socket.write(
          `GET /${reader.stream.name} HTTP/1.1\r\nHost: 127.0.0.1:${config.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        );
      }
      resolve();
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      // tcpserversink listens only once its pipeline runs, a moment after the header is in.
      if (!reader.connected && error.code === 'ECONNREFUSED' && attempt < 50) {
        setTimeout(() => void connect(reader, attempt + 1).then(resolve), 100);
        return;
      }
      errors++;
      resolve();
    });
    socket.on('close', () => {
      if (reader.connected) closed++;
    });
  });
}

async function connectAll(connected: () => Promise<void>): Promise<void> {
  for (let i = 0; i < config.viewers; i++) readers.push(new Reader(clocks[config.viewersOn === 'first' ? 0 : i % clocks.length]));
  // Paced, not awaited: tcpserversink listens with a backlog of 5 and drops SYNs beyond it
  // (the client retries a second later), so waiting on each connect would take minutes.
  const gapMs = config.protocol === 'raw' ? 2 : 1;
  const pending: Promise<void>[] = [];
  for (const reader of readers) {
    pending.push(connect(reader));
    await new Promise((r) => setTimeout(r, gapMs));
  }
  await Promise.all(pending);
  await connected();
  // Wait until every reader has had some bytes.
  const deadline = performance.now() + 15_000;
  while (readers.some((r) => r.bytes === 0) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

function summary(values: number[]): { count: number; p50: number; p99: number; max: number } {
  const sorted = Float64Array.from(values).sort();
  return { count: sorted.length, p50: quantile(sorted, 0.5), p99: quantile(sorted, 0.99), max: sorted.length ? sorted[sorted.length - 1] : NaN };
}

let windowStart = 0;
let mediaRequested: (() => void) | null = null;
const input = readline.createInterface({ input: process.stdin });
input.on('line', (line) => {
  const command = line.trim();
  if (command === 'start') {
    latencies.length = 0;
    fanoutLatencies.length = 0;
    unmatched = 0;
    for (const r of readers) r.windowBytes = 0;
    measuring = true;
    windowStart = performance.now();
    out({ type: 'started' });
  } else if (command === 'stop') {
    measuring = false;
    const seconds = (performance.now() - windowStart) / 1000;
    const rates = readers.map((r) => (r.windowBytes * 8) / seconds).sort((a, b) => a - b);
    out({
      type: 'result',
      seconds,
      latency: summary(latencies),
      fanoutLatency: summary(fanoutLatencies),
      unmatched,
      senderDone,
      errors,
      closed,
      connected: readers.filter((r) => r.connected).length,
      minBitrate: rates[0] ?? 0,
      medianBitrate: rates[rates.length >> 1] ?? 0,
    });
  } else if (command === 'media') {
    mediaRequested?.();
  } else if (command === 'quit') {
    for (const r of readers) r.socket?.destroy();
    process.exit(0);
  }
});

async function main(): Promise<void> {
  const started = performance.now();
  const replayMedia = config.recording ? await openSenders() : null;
  const startMedia = () => void replayMedia?.().catch((error: Error) => out({ type: 'sender-error', message: error.message }));
  if (config.connectAfterMs >= 0) {
    startMedia();
    await new Promise((r) => setTimeout(r, config.connectAfterMs));
  }
  out({ type: 'connecting', mediaMs: mediaStart > 0 ? performance.now() - mediaStart : performance.now() - started });
  await connectAll(async () => {
    if (config.connectAfterMs >= 0) return;
    // Every reader is connected and idle: the parent takes the server's memory, then says `media`.
    const media = new Promise<void>((resolve) => (mediaRequested = resolve));
    out({ type: 'connected', connected: readers.filter((r) => r.connected).length });
    await media;
    startMedia();
  });
  out({ type: 'ready', connected: readers.filter((r) => r.bytes > 0).length, errors, mediaMs: mediaStart > 0 ? performance.now() - mediaStart : 0 });
}

void main();
