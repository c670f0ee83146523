import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebmSplitter } from '../../src/webm/splitter.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const CLI = path.join(ROOT, 'dist/src/cli.js');

export interface RunningRelay {
  process: ChildProcess;
  port: number;
  url: string;
  /** Everything the relay logged so far. */
  log(): string;
  /** SIGTERM, and resolves with the exit code once it has exited. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface RawRelay {
  process: ChildProcess;
  log(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>;
  startedAt: number;
}

/** Starts `webm-relay` as a real process on a free port, its log collected; does not wait for it. */
export function spawnRelay(args: string[], env: NodeJS.ProcessEnv = {}, stdin: 'pipe' | 'ignore' = 'ignore'): RawRelay {
  const startedAt = Date.now();
  const child = spawn(process.execPath, [CLI, '--port', '0', '--host', '127.0.0.1', ...args], {
    // No drain on SIGTERM unless a test asks for one (--drain): most tests stop relays with viewers attached.
    env: { ...process.env, WEBM_RELAY_LOG: 'debug', WEBM_RELAY_DRAIN: '0', ...env },
    stdio: [stdin, 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (text: string) => (log += text));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; atMs: number }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal, atMs: Date.now() - startedAt })),
  );
  return { process: child, log: () => log, exited, startedAt };
}

/** Starts `webm-relay` as a real process on a free port; resolves once it serves HTTP. */
export async function startRelay(args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<RunningRelay> {
  const { process: child, log, exited } = spawnRelay(args, env, 'pipe');
  const port = await new Promise<number>((resolve, reject) => {
    // A relay that never got to serve must not outlive the test: left running, it and its
    // encoder load the machine for every test after it (on an overloaded machine that
    // snowballs). SIGTERM stops its encoder too; SIGKILL if that hangs.
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      setTimeout(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'), 3000).unref();
      reject(new Error(`relay did not start within 20 s:\n${log()}`));
    }, 20_000);
    const onData = () => {
      const match = /serving http:\/\/[^:]+:(\d+)\//.exec(log());
      if (match) {
        clearTimeout(timer);
        child.stderr!.off('data', onData);
        resolve(Number(match[1]));
      }
    };
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`relay exited with ${code} before serving:\n${log()}`)));
  });
  return {
    process: child,
    port,
    url: `http://127.0.0.1:${port}`,
    log,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return (await exited).code;
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls until `check` is true or the time is up. */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function getJson<T = Record<string, unknown>>(url: string): Promise<T> {
  const response = await fetch(url);
  return (await response.json()) as T;
}

export async function waitLive(relay: RunningRelay, timeoutMs = 10_000): Promise<void> {
  await waitFor('the stream to be live', async () => (await fetch(`${relay.url}/healthz`)).status === 200, timeoutMs);
}

export interface Capture {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** Reads `path` for `ms` milliseconds, then hangs up. */
export function capture(url: string, ms: number, headers: Record<string, string> = {}): Promise<Capture> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const request = http.get(url, { headers }, (response) => {
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      const done = () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) });
      const timer = setTimeout(() => {
        request.destroy();
        done();
      }, ms);
      response.once('end', () => {
        clearTimeout(timer);
        done();
      });
    });
    request.on('error', (error) => {
      if (!request.destroyed) reject(error);
    });
  });
}

/** The longest prefix of a WebM capture that ends on a whole block: a capture cut at any byte. */
export function trimToCompleteBlocks(bytes: Buffer): Buffer {
  let end = 0;
  const splitter = new WebmSplitter({
    header: () => {},
    cluster: () => {},
    block: (b) => (end = b.offset + b.size),
    end: () => {},
    error: () => {},
  });
  splitter.feed(bytes);
  return bytes.subarray(0, end);
}

/** Lines `ffmpeg -v error` prints while decoding every frame of `bytes` (none: it decodes cleanly). */
export function ffmpegErrors(bytes: Buffer): string[] {
  const result = spawnSync('ffmpeg', ['-hide_banner', '-v', 'error', '-i', 'pipe:0', '-f', 'null', '-'], {
    input: bytes,
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  return result.stderr.split('\n').filter((line) => line.trim() !== '');
}

/** How many processes run this program (exact name match). */
export function countProcesses(name: string): number {
  const result = spawnSync('pgrep', ['-c', '-x', name.slice(0, 15)], { encoding: 'utf8' });
  return Number(result.stdout.trim() || 0);
}

/**
 * Ports this process has handed out. The kernel may give the port it just freed to the
 * next caller too: two calls before either port is bound (nginx's HTTP and TLS ports)
 * once got the same one.
 */
const handedOut = new Set<number>();

export async function freePort(): Promise<number> {
  for (;;) {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise((resolve) => server.close(resolve));
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
}
