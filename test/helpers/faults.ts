/**
 * Fault-injection helpers for the reliability suite: processes of our own relay
 * (found through /proc, never by global name counts, since other suites run on
 * this machine at the same time), producers, raw sockets, viewers that record
 * what they observe, and WebM inspection.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import WebSocket from 'ws';
import type { EncoderSettings } from '../../src/config/options.js';
import { encoderArgs } from '../../src/source/gst-args.js';
import { WebmSplitter } from '../../src/webm/splitter.js';
import { freePort, startRelay, waitFor, type RunningRelay } from './relay.js';

import { sleep } from './relay.js';
export { sleep };

// --- processes -------------------------------------------------------------------

export interface ProcInfo {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
}

export function procInfo(pid: number): ProcInfo | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const [state, ppid] = text.slice(close + 2).split(' ');
  return { pid, comm, state, ppid: Number(ppid) };
}

/** Running (not zombie) processes whose parent is `pid`. */
export function childrenOf(pid: number): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const info = procInfo(Number(entry));
    if (info && info.ppid === pid && info.state !== 'Z' && info.state !== 'X') out.push(info);
  }
  return out;
}

/** The gst-launch-1.0 processes the relay `pid` has spawned and that are still alive. */
export function gstChildren(pid: number): number[] {
  // Encoders only, known by their muxer: a snapshot decoder (fdsrc ... jpegenc, for the
  // player's poster) is a short-lived gst-launch-1.0 child too, and one that is exiting
  // has an empty command line (it was counted as a second encoder once).
  return childrenOf(pid)
    .filter((p) => p.comm === 'gst-launch-1.0' && commandLine(p.pid).includes('webmmux'))
    .map((p) => p.pid);
}

function commandLine(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** Alive and not a zombie. */
export function alive(pid: number): boolean {
  const info = procInfo(pid);
  return info !== null && info.state !== 'Z' && info.state !== 'X';
}

/** Live processes named `comm` whose command line contains `needle` (e.g. "port=41234"). */
export function processesWithArg(comm: string, needle: string): number[] {
  const out: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const info = procInfo(Number(entry));
    if (!info || info.comm !== comm || info.state === 'Z') continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (cmdline.includes(needle)) out.push(info.pid);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Resident memory of a process, in kB. */
export function vmRssKb(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
}

/** Open file descriptors of a process. */
export function fdCount(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

/** The relay's own ingest port for its encoder, from the `encoder:` log line. */
export function encoderPort(log: string): number | null {
  const match = /\[ingest\] \S+: encoder: .* port=(\d+)/.exec(log);
  return match ? Number(match[1]) : null;
}

/** A relay process started without the harness' expectations (it may fail to start). */
export { spawnRelay, type RawRelay } from './relay.js';

/** Every child process a test starts, so after/afterEach can kill what is left. */
const started = new Set<ChildProcess>();

export function track<T extends ChildProcess>(child: T): T {
  started.add(child);
  child.once('exit', () => started.delete(child));
  return child;
}

export async function killTracked(): Promise<void> {
  const waits: Promise<unknown>[] = [];
  for (const child of started) {
    if (child.exitCode === null && child.signalCode === null) {
      waits.push(new Promise((resolve) => child.once('exit', resolve)));
      child.kill('SIGKILL');
    }
  }
  started.clear();
  await Promise.race([Promise.all(waits), sleep(5000)]);
}

/** Stops a process (SIGINT first, so gst-launch -e and ffmpeg finish their stream), SIGKILL after `graceMs`. */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGINT', graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

// --- producers ---------------------------------------------------------------------

export const PRODUCER: EncoderSettings = {
  videoSource: 'videotestsrc is-live=true pattern=ball',
  audioSource: 'audiotestsrc is-live=true wave=sine freq=440 volume=0.1',
  width: 320,
  height: 240,
  framerate: 30,
  videoBitrateKbps: 400,
  audioBitrateKbps: 48,
  keyframeIntervalS: 1,
  videoCodec: 'vp8',
  audioCodec: 'opus',
};

export interface Producer {
  process: ChildProcess;
  stderr(): string;
}

/** A gst-launch-1.0 producer, the relay's own pipeline, pushing live WebM to tcp://127.0.0.1:port. */
export function gstProducer(port: number, settings: Partial<EncoderSettings> = {}): Producer {
  const child = track(spawn('gst-launch-1.0', encoderArgs({ ...PRODUCER, ...settings }, port), { stdio: ['ignore', 'ignore', 'pipe'] }));
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (t: string) => (stderr += t));
  return { process: child, stderr: () => stderr };
}

/** An ffmpeg live WebM producer (test pattern + tone) writing to `output` with extra output options. */
export function ffmpegProducer(output: string, outputOptions: string[] = [], codec: 'vp8' | 'vp9' = 'vp8'): Producer {
  const video = codec === 'vp8' ? ['-c:v', 'libvpx'] : ['-c:v', 'libvpx-vp9', '-row-mt', '1'];
  const args = [
    '-hide_banner', '-loglevel', 'error', '-nostdin',
    '-re', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=30',
    '-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    ...video, '-deadline', 'realtime', '-cpu-used', '8', '-b:v', '400k', '-g', '30', '-keyint_min', '30',
    '-c:a', 'libopus', '-b:a', '48k',
    ...outputOptions,
    '-f', 'webm', '-live', '1', output,
  ];
  const child = track(spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] }));
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (t: string) => (stderr += t));
  return { process: child, stderr: () => stderr };
}

/** Sends `bytes` as one producer connection; resolves when the relay has closed it, or after `ms`. */
export function sendIngest(port: number, bytes: Buffer, opts: { end?: boolean; timeoutMs?: number } = {}): Promise<{ localPort: number; closedByPeer: boolean; error?: string }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let localPort = 0;
    let closedByPeer = false;
    let error: string | undefined;
    const timer = setTimeout(() => socket.destroy(), opts.timeoutMs ?? 10_000);
    socket.on('connect', () => {
      localPort = socket.localPort!;
      socket.write(bytes);
      if (opts.end !== false) socket.end();
    });
    socket.on('data', () => {});
    socket.on('end', () => (closedByPeer = true));
    socket.on('error', (e) => {
      error = e.message;
      closedByPeer = true;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ localPort, closedByPeer, error });
    });
  });
}

// --- viewers ----------------------------------------------------------------------

/** An HTTP viewer of /live.webm that records everything and how the response ended. */
export class HttpViewer {
  chunks: Buffer[] = [];
  bytes = 0;
  status = 0;
  /** 'end': a clean end of the chunked body; 'aborted': the connection broke mid-body. */
  outcome: 'open' | 'end' | 'aborted' | 'error' = 'open';
  endedAt = 0;
  readonly done: Promise<void>;
  private request!: http.ClientRequest;

  constructor(url: string) {
    this.done = new Promise((resolve) => {
      this.request = http.get(url, (response) => {
        this.status = response.statusCode ?? 0;
        response.on('data', (chunk: Buffer) => {
          this.chunks.push(chunk);
          this.bytes += chunk.length;
        });
        response.once('end', () => {
          if (this.outcome === 'open') this.outcome = 'end';
          this.endedAt = Date.now();
          resolve();
        });
        response.once('aborted', () => {
          this.outcome = 'aborted';
        });
        response.once('error', () => {
          if (this.outcome === 'open') this.outcome = 'aborted';
          this.endedAt = Date.now();
          resolve();
        });
      });
      this.request.on('error', () => {
        if (this.outcome === 'open') this.outcome = 'error';
        this.endedAt = Date.now();
        resolve();
      });
    });
  }

  get body(): Buffer {
    return Buffer.concat(this.chunks);
  }

  close(): void {
    this.request.destroy();
  }
}

export interface WsMessage {
  text?: string;
  binary?: Buffer;
  at: number;
}

/** A WebSocket viewer of /live that records every message in order, and how it closed. */
export class WsViewer {
  readonly socket: WebSocket;
  messages: WsMessage[] = [];
  binaryBytes = 0;
  closeCode: number | null = null;
  closeReason = '';
  readonly opened: Promise<void>;
  readonly closed: Promise<void>;

  constructor(url: string, options: WebSocket.ClientOptions = {}) {
    this.socket = new WebSocket(url, options);
    this.socket.on('error', () => {});
    this.opened = new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve());
      this.socket.once('error', reject);
    });
    this.closed = new Promise((resolve) =>
      this.socket.once('close', (code, reason) => {
        this.closeCode = code;
        this.closeReason = reason.toString();
        resolve();
      }),
    );
    this.socket.on('message', (data: Buffer, isBinary) => {
      if (isBinary) {
        this.messages.push({ binary: data, at: Date.now() });
        this.binaryBytes += data.length;
      } else {
        this.messages.push({ text: data.toString(), at: Date.now() });
      }
    });
  }

  streamMessages(): { index: number; mimeType: string }[] {
    const out: { index: number; mimeType: string }[] = [];
    this.messages.forEach((m, index) => {
      if (m.text === undefined) return;
      try {
        const parsed = JSON.parse(m.text) as { type?: string; mimeType?: string };
        if (parsed.type === 'stream') out.push({ index, mimeType: parsed.mimeType ?? '' });
      } catch {
        // not JSON
      }
    });
    return out;
  }

  close(): void {
    this.socket.terminate();
  }
}

/** Raw bytes to the HTTP port; resolves with whatever came back once the relay closes or after `ms`. */
export function rawRequest(port: number, bytes: string | Buffer, ms = 5000): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), ms);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
  });
}

// --- WebM inspection ------------------------------------------------------------

export interface StreamShape {
  headers: number;
  blocks: number;
  /** Per track, output timestamps in ms, in stream order. */
  times: Map<number, number[]>;
  /** Per track, places where a timestamp was smaller than the one before. */
  backwards: { track: number; from: number; to: number }[];
  keyframes: number;
  errors: string[];
}

/** What a viewer's bytes contain: EBML headers, blocks and their timestamps per track. */
export function streamShape(bytes: Buffer): StreamShape {
  const shape: StreamShape = { headers: 0, blocks: 0, times: new Map(), backwards: [], keyframes: 0, errors: [] };
  let scale = 1_000_000;
  const splitter = new WebmSplitter({
    header: (h) => {
      shape.headers++;
      scale = h.info.timecodeScale;
    },
    cluster: () => {},
    block: (b) => {
      shape.blocks++;
      if (b.keyframe) shape.keyframes++;
      const ms = (b.timecode * scale) / 1e6;
      const list = shape.times.get(b.track) ?? [];
      if (list.length > 0 && ms < list[list.length - 1]) shape.backwards.push({ track: b.track, from: list[list.length - 1], to: ms });
      list.push(ms);
      shape.times.set(b.track, list);
    },
    end: () => {},
    error: (e) => {
      if (e.code !== 'TRUNCATED') shape.errors.push(`${e.code}: ${e.message}`);
    },
  });
  splitter.feed(bytes);
  return shape;
}

export { prng } from './ebml-builder.js';

/** Polls /api/stats until `check` holds. */
export async function waitStats(url: string, what: string, check: (stats: Record<string, any>) => boolean, timeoutMs = 15_000): Promise<Record<string, any>> {
  let last: Record<string, any> = {};
  await waitFor(what, async () => {
    try {
      last = (await (await fetch(`${url}/api/stats`)).json()) as Record<string, any>;
      return check(last);
    } catch {
      return false;
    }
  }, timeoutMs).catch((e: Error) => {
    throw new Error(`${e.message}; last stats: ${JSON.stringify(last)}`);
  });
  return last;
}

/** Lines of a log that match `pattern`. */
export function logLines(log: string, pattern: RegExp): string[] {
  return log.split('\n').filter((line) => pattern.test(line));
}

/**
 * startRelay with --ingest tcp://127.0.0.1:PORT on a free port, resolved once the ingest
 * port listens too: the relay logs "serving" before it opens the ingest port, and a
 * producer that connects in between is refused by the kernel.
 */
export async function startTcpRelay(args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<{ relay: RunningRelay; ingestPort: number }> {
  const ingestPort = await freePort();
  const relay = await startRelay(['--ingest', `tcp://127.0.0.1:${ingestPort}`, ...args], env);
  try {
    await waitFor('the ingest port to listen', () => relay.log().includes(`listening for a producer on tcp://127.0.0.1:${ingestPort}`), 10_000);
  } catch (error) {
    await relay.stop('SIGKILL');
    throw error;
  }
  return { relay, ingestPort };
}

/** Busy loops, one per core by default, at normal priority: a loaded machine. */
export function cpuHog(processes = 2): { stop(): void } {
  const children: ChildProcess[] = [];
  for (let i = 0; i < processes; i++) {
    // Each loop quits once its parent is gone (a test run killed from outside), checking every 1e8 turns.
    const loop = `const parent = ${process.pid}; for (let i = 1; ; i++) if (i % 1e8 === 0 && process.ppid !== parent) process.exit();`;
    children.push(spawn(process.execPath, ['-e', loop], { stdio: 'ignore' }));
  }
  return {
    stop() {
      for (const child of children) child.kill('SIGKILL');
    },
  };
}
