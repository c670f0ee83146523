/**
 * Real nginx, HAProxy and Varnish in front of real relays, each started with the
 * repository's configuration from deploy/ (only addresses, ports, certificate paths and
 * working files changed), in a temporary directory of its own, on 127.0.0.1, and
 * killed by the test. Plus viewers that note when each block arrives, to compare the
 * lag through a proxy with the lag of a direct connection.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { WebSocket } from 'ws';
import { WebmSplitter } from '../../src/webm/splitter.js';
import { freePort, ROOT, sleep, waitFor } from '../helpers/relay.js';

export type ProxyKind = 'nginx' | 'haproxy' | 'varnish';
export const PROXY_KINDS: readonly ProxyKind[] = ['nginx', 'haproxy', 'varnish'];

export interface RunningProxy {
  kind: ProxyKind;
  /** http://127.0.0.1:PORT */
  url: string;
  port: number;
  /** https://127.0.0.1:PORT where the proxy terminates TLS (nginx, HAProxy). */
  tlsUrl: string | null;
  dir: string;
  process: ChildProcess;
  /** What the proxy printed (HAProxy's request log goes here). */
  output(): string;
  stop(): Promise<void>;
}

export interface ProxyOptions {
  /** Varnish: `-p` parameters, e.g. { send_timeout: '4' }. */
  varnishParams?: Record<string, string>;
  /** Changes the configuration text before it is used (to prove a line matters). */
  editConfig?: (text: string) => string;
}

const tempDirs: string[] = [];
/** Every proxy started and not yet stopped: one that started while another failed to must not be left running. */
const running = new Set<ChildProcess>();

function tempDir(kind: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `webm-relay-${kind}-`));
  tempDirs.push(dir);
  return dir;
}

/** A self-signed certificate for 127.0.0.1, in the shapes nginx (cert + key) and HAProxy (one PEM) read. */
export function selfSignedCertificate(dir: string): { cert: string; key: string; pem: string } {
  const cert = path.join(dir, 'relay.crt');
  const key = path.join(dir, 'relay.key');
  const pem = path.join(dir, 'relay.pem');
  const result = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`openssl: ${result.stderr}`);
  fs.writeFileSync(pem, fs.readFileSync(cert, 'utf8') + fs.readFileSync(key, 'utf8'));
  return { cert, key, pem };
}

function replaceOnce(text: string, pattern: RegExp, replacement: string, what: string): string {
  if (!pattern.test(text)) throw new Error(`deploy config: ${what} not found (${pattern})`);
  return text.replace(pattern, replacement);
}

function collect(child: ChildProcess): () => string {
  let text = '';
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (t: string) => (text += t));
  child.stderr?.on('data', (t: string) => (text += t));
  return () => text;
}

async function waitListening(port: number, child: ChildProcess, output: () => string, what: string): Promise<void> {
  await waitFor(
    `${what} to listen on ${port}`,
    () => {
      if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}:\n${output()}`);
      return new Promise<boolean>((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
      });
    },
    // varnishd compiles its VCL with cc first: seconds on a busy machine.
    30_000,
  );
}

function stopper(child: ChildProcess): () => Promise<void> {
  running.add(child);
  child.once('exit', () => running.delete(child));
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    if (await Promise.race([exited.then(() => false), sleep(3000).then(() => true)])) {
      child.kill('SIGKILL');
      await exited;
    }
  };
}

/** nginx with deploy/nginx/webm-relay.conf in front of the relays on `backends` (ports). */
export async function startNginx(backends: number[], options: ProxyOptions = {}): Promise<RunningProxy> {
  const dir = tempDir('nginx');
  const [port, tlsPort] = [await freePort(), await freePort()];
  const { cert, key } = selfSignedCertificate(dir);
  let site = fs.readFileSync(path.join(ROOT, 'deploy/nginx/webm-relay.conf'), 'utf8');
  site = replaceOnce(site, /^\s*server 127\.0\.0\.1:9001;$/m, backends.map((p) => `    server 127.0.0.1:${p};`).join('\n'), 'upstream server');
  site = replaceOnce(site, /^\s*listen 80;$/m, `    listen 127.0.0.1:${port};`, 'listen 80');
  site = replaceOnce(site, /^\s*listen 443 ssl;$/m, `    listen 127.0.0.1:${tlsPort} ssl;`, 'listen 443');
  site = replaceOnce(site, /ssl_certificate\s+\S+;/, `ssl_certificate ${cert};`, 'ssl_certificate');
  site = replaceOnce(site, /ssl_certificate_key\s+\S+;/, `ssl_certificate_key ${key};`, 'ssl_certificate_key');
  if (options.editConfig) site = options.editConfig(site);
  fs.writeFileSync(path.join(dir, 'site.conf'), site);
  // The parts of /etc/nginx/nginx.conf a site relies on, with every path in our directory.
  const conf = [
    process.getuid?.() === 0 ? 'user root;' : '',
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log info;`,
    'events { worker_connections 1024; }',
    'http {',
    `  access_log ${dir}/access.log;`,
    `  client_body_temp_path ${dir}/body;`,
    `  proxy_temp_path ${dir}/proxy;`,
    `  fastcgi_temp_path ${dir}/fastcgi;`,
    `  uwsgi_temp_path ${dir}/uwsgi;`,
    `  scgi_temp_path ${dir}/scgi;`,
    `  include ${dir}/site.conf;`,
    '}',
  ].join('\n');
  fs.writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const child = spawn('nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const output = collect(child);
  const stop = stopper(child);
  await waitListening(port, child, () => output() + readIf(path.join(dir, 'error.log')), 'nginx');
  return { kind: 'nginx', url: `http://127.0.0.1:${port}`, port, tlsUrl: `https://127.0.0.1:${tlsPort}`, dir, process: child, output: () => output() + readIf(path.join(dir, 'error.log')), stop };
}

/** HAProxy with deploy/haproxy/haproxy.cfg in front of the relays on `backends`. */
export async function startHaproxy(backends: number[], options: ProxyOptions = {}): Promise<RunningProxy> {
  const dir = tempDir('haproxy');
  const [port, tlsPort] = [await freePort(), await freePort()];
  const { pem } = selfSignedCertificate(dir);
  let cfg = fs.readFileSync(path.join(ROOT, 'deploy/haproxy/haproxy.cfg'), 'utf8');
  cfg = replaceOnce(cfg, /^\s*bind :80$/m, `    bind 127.0.0.1:${port}`, 'bind :80');
  cfg = replaceOnce(cfg, /^\s*bind :443 ssl crt \S+/m, `    bind 127.0.0.1:${tlsPort} ssl crt ${pem}`, 'bind :443');
  cfg = replaceOnce(cfg, /(^\s*server relay\d+ 127\.0\.0\.1:\d+.*\n)+/m, backends.map((p, i) => `    server relay${i + 1} 127.0.0.1:${p}\n`).join(''), 'server lines');
  // Publishers go to the first relay (the origin).
  cfg = replaceOnce(cfg, /^(\s*server origin) 127\.0\.0\.1:\d+/m, `$1 127.0.0.1:${backends[0]}`, 'the publish backend');
  if (options.editConfig) cfg = options.editConfig(cfg);
  const file = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(file, cfg);
  const child = spawn('haproxy', ['-db', '-f', file], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  const output = collect(child);
  const stop = stopper(child);
  await waitListening(port, child, output, 'haproxy');
  return { kind: 'haproxy', url: `http://127.0.0.1:${port}`, port, tlsUrl: `https://127.0.0.1:${tlsPort}`, dir, process: child, output, stop };
}

/** varnishd with deploy/varnish/webm-relay.vcl in front of the relay on `backend`. */
export async function startVarnish(backend: number, options: ProxyOptions = {}): Promise<RunningProxy> {
  const dir = tempDir('varnish');
  const port = await freePort();
  let vcl = fs.readFileSync(path.join(ROOT, 'deploy/varnish/webm-relay.vcl'), 'utf8');
  vcl = replaceOnce(vcl, /\.port = "9001";/, `.port = "${backend}";`, 'backend port');
  if (options.editConfig) vcl = options.editConfig(vcl);
  const file = path.join(dir, 'webm-relay.vcl');
  fs.writeFileSync(file, vcl);
  const params = Object.entries(options.varnishParams ?? {}).flatMap(([k, v]) => ['-p', `${k}=${v}`]);
  const child = spawn(
    'varnishd',
    ['-j', 'none', '-n', path.join(dir, 'n'), '-F', '-a', `127.0.0.1:${port}`, '-T', 'none', '-f', file, '-s', 'malloc,64m', '-p', 'vsl_space=1M', '-p', 'vsm_free_cooldown=10', ...params],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const output = collect(child);
  const stop = stopper(child);
  await waitListening(port, child, output, 'varnishd');
  return { kind: 'varnish', url: `http://127.0.0.1:${port}`, port, tlsUrl: null, dir, process: child, output, stop };
}

export function startProxy(kind: ProxyKind, backends: number[], options: ProxyOptions = {}): Promise<RunningProxy> {
  if (kind === 'nginx') return startNginx(backends, options);
  if (kind === 'haproxy') return startHaproxy(backends, options);
  return startVarnish(backends[0], options);
}

function readIf(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Stops proxies and removes their directories. */
export async function stopProxies(proxies: (RunningProxy | null | undefined)[]): Promise<void> {
  await Promise.all(proxies.map((p) => p?.stop()));
}

/** Stops every proxy still running (also ones whose start failed half-way), then removes their directories. */
export async function cleanUpProxies(): Promise<void> {
  await Promise.all([...running].map((child) => stopper(child)()));
  for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

// --- viewers that time what they receive ---------------------------------------------

/**
 * A viewer of the endless stream (HTTP `/live.webm` or WebSocket `/live`) that notes, for
 * every block, when it arrived (`track:timecode` -> ms since the epoch), and every gap
 * between two media arrivals. With `reconnect`, it comes back after a close the way the
 * player does (250 ms, doubling, +-25 %), each connection a new stream.
 */
export class TimedViewer {
  readonly arrivals = new Map<string, number>();
  readonly connections: { startedAt: number; status: number; firstMediaAt: number; lastMediaAt: number; closedAt: number; bytes: Buffer[] }[] = [];
  /** Statuses of answers that were not the stream (e.g. 503), with times. */
  readonly refusals: { status: number; at: number }[] = [];
  lastMediaAt = 0;
  /** Audio blocks received without the keyframe flag (every Opus or Vorbis frame is one). */
  audioBlocksWithoutKeyframeFlag = 0;
  audioBlocks = 0;
  /** When anything arrived: media, keep-alive bytes, WebSocket pings. */
  readonly trafficAt: number[] = [];
  /** Longest time between two media arrivals (also across reconnects), and when it ended. */
  longestGap = { ms: 0, endedAt: 0 };
  closedAt = 0;
  private stopped = false;
  private failures = 0;
  private request: http.ClientRequest | null = null;
  private ws: WebSocket | null = null;

  constructor(
    readonly url: string,
    readonly options: { reconnect?: boolean; headers?: Record<string, string> } = {},
  ) {
    this.connect();
  }

  get kind(): 'http' | 'ws' {
    return this.url.startsWith('ws') ? 'ws' : 'http';
  }

  get current() {
    return this.connections[this.connections.length - 1];
  }

  /** Everything received on connection `i` (default: the first). */
  body(i = 0): Buffer {
    return Buffer.concat(this.connections[i]?.bytes ?? []);
  }

  private connect(): void {
    if (this.stopped) return;
    const connection = { startedAt: Date.now(), status: 0, firstMediaAt: 0, lastMediaAt: 0, closedAt: 0, bytes: [] as Buffer[] };
    this.connections.push(connection);
    const audioTracks = new Set<number>();
    const splitter = new WebmSplitter(
      {
        header: (h) => {
          for (const t of h.info.tracks) if (t.kind === 'audio') audioTracks.add(t.number);
        },
        cluster: () => {},
        block: (b) => {
          if (audioTracks.has(b.track)) {
            this.audioBlocks++;
            if (!b.keyframe) this.audioBlocksWithoutKeyframeFlag++;
          }
          const now = Date.now();
          if (!connection.firstMediaAt) connection.firstMediaAt = now;
          connection.lastMediaAt = now;
          const key = `${b.track}:${b.timecode}`;
          if (!this.arrivals.has(key)) this.arrivals.set(key, now);
          if (this.lastMediaAt && now - this.lastMediaAt > this.longestGap.ms) this.longestGap = { ms: now - this.lastMediaAt, endedAt: now };
          this.lastMediaAt = now;
        },
        end: () => {},
        error: () => {},
      },
      { maxHeaderSize: 16 << 20, maxElementSize: 64 << 20 },
    );
    const data = (chunk: Buffer) => {
      this.trafficAt.push(Date.now());
      connection.bytes.push(chunk);
      splitter.feed(chunk);
    };
    const closed = (status: number) => {
      if (connection.closedAt) return;
      connection.closedAt = Date.now();
      this.closedAt = connection.closedAt;
      if (status && status !== 200 && status !== 101) this.refusals.push({ status, at: connection.closedAt });
      if (!this.options.reconnect || this.stopped) return;
      this.failures = connection.firstMediaAt ? 0 : this.failures + 1;
      const delay = Math.min(5000, 250 * 2 ** this.failures) * (0.75 + Math.random() * 0.5);
      setTimeout(() => this.connect(), delay);
    };
    if (this.kind === 'ws') {
      const ws = new WebSocket(this.url, { headers: this.options.headers, rejectUnauthorized: false });
      this.ws = ws;
      ws.on('upgrade', () => (connection.status = 101));
      ws.on('unexpected-response', (_req, res) => {
        connection.status = res.statusCode ?? 0;
        res.resume();
        ws.terminate();
        closed(connection.status);
      });
      ws.on('ping', () => this.trafficAt.push(Date.now()));
      ws.on('message', (message: Buffer, isBinary) => {
        if (isBinary) data(message);
      });
      ws.on('error', () => closed(connection.status));
      ws.on('close', () => closed(connection.status));
    } else {
      const client = this.url.startsWith('https:') ? https : http;
      const request = client.get(this.url, { headers: this.options.headers, rejectUnauthorized: false }, (response) => {
        connection.status = response.statusCode ?? 0;
        if (connection.status !== 200) {
          response.resume();
          response.once('end', () => closed(connection.status));
          return;
        }
        response.on('data', data);
        response.once('close', () => closed(connection.status));
      });
      this.request = request;
      request.on('error', () => closed(connection.status));
    }
  }

  /** Arrivals of anything between two times. */
  trafficBetween(from: number, to: number): number {
    return this.trafficAt.filter((t) => t > from && t < to).length;
  }

  stop(): void {
    this.stopped = true;
    this.request?.destroy();
    this.ws?.terminate();
  }
}

/**
 * How much later `viewer` received the blocks that `reference` received too: the
 * median and 95th percentile of the differences, over blocks both saw.
 */
export function addedLag(reference: TimedViewer, viewer: TimedViewer): { medianMs: number; p95Ms: number; blocks: number } {
  const diffs: number[] = [];
  for (const [key, at] of viewer.arrivals) {
    const ref = reference.arrivals.get(key);
    if (ref !== undefined) diffs.push(at - ref);
  }
  diffs.sort((a, b) => a - b);
  const pick = (q: number) => (diffs.length ? diffs[Math.min(diffs.length - 1, Math.floor(q * diffs.length))] : NaN);
  return { medianMs: pick(0.5), p95Ms: pick(0.95), blocks: diffs.length };
}

/** Milliseconds from sending the request to the first media block, or NaN. */
export function firstMediaMs(viewer: TimedViewer, i = 0): number {
  const c = viewer.connections[i];
  return c && c.firstMediaAt ? c.firstMediaAt - c.startedAt : NaN;
}

export function median(values: number[]): number {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : NaN;
}

/** A plain GET: status, headers and body text. Over https the test's self-signed certificate is accepted. */
export function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const client = url.startsWith('https:') ? https : http;
    const request = client.get(url, { headers, rejectUnauthorized: false }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (t: string) => (text += t));
      response.once('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, text }));
    });
    request.setTimeout(10_000, () => request.destroy(new Error(`GET ${url}: no answer in 10 s`)));
    request.on('error', reject);
  });
}
