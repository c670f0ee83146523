/**
 * "Prove the economics": what one more viewer costs the relay, next to GStreamer's
 * tcpserversink (native C, the same job without HTTP) and to bench/floor.c (the least
 * any server can do), and what encoding once saves next to one encoder per viewer.
 * With `--streams 1,10` the relay also serves the same viewers spread over several
 * streams, each fed its own replay, to show what a stream costs next to a viewer.
 * Options: see USAGE (`--help`).
 *
 * Pinning puts the server under test on CPU 0 and the readers on the others. Unpinned,
 * the scheduler often wakes a reader on the server's CPU (the server's write is what
 * wakes it), the two share one core for a while, and the same fan-out round takes
 * anywhere from 8 to 16 ms: latency figures then measure the scheduler.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { countEvents, cpuSeconds, cpuTimes, encoderArgsWithSink, encoderConfig, machine, median, memory, pairedRatio, recording, sendPlan, sleep, VIDEO_BITRATE_KBPS } from './fanout-lib.js';
import type { ReadersConfig } from './fanout-readers.js';
import { freePort } from '../test/helpers/relay.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.resolve(HERE, '../src/cli.js');
const READERS = path.resolve(HERE, 'fanout-readers.js');
/** About 20 s would do; 30 leaves room for connecting 1000 readers, warm-up and the window. */
const RECORDING_S = Number(process.env.FANOUT_RECORDING_S ?? 30);

/**
 * `relay`: HTTP /live.webm viewers; `relay-ws`: WebSocket /live viewers (the player
 * page's way); `tcpserversink`: GStreamer's; `floor`: bench/floor.c, one write of each
 * ingest read to every reader and nothing else.
 */
type Target = 'relay' | 'relay-ws' | 'tcpserversink' | 'floor';
const RELAYS: Target[] = ['relay', 'relay-ws'];
const REFERENCES: Target[] = ['tcpserversink', 'floor'];
/**
 * Servers measured with several streams: the relay, and the floor as the least the
 * same streams can cost (a read per producer write, the writes, the wake-ups).
 */
const SERVES_STREAMS: Target[] = [...RELAYS, 'floor'];

const { values: argv } = parseArgs({
  options: {
    viewers: { type: 'string' },
    streams: { type: 'string' },
    'viewers-on': { type: 'string' },
    window: { type: 'string' },
    reps: { type: 'string' },
    encoders: { type: 'string' },
    targets: { type: 'string' },
    pin: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
const USAGE = `usage: node dist/bench/fanout.js [options]   (npm run bench:fanout)

  --viewers LIST     reader counts to measure, in all (FANOUT_VIEWERS, default 100,300,1000)
  --streams LIST     stream counts the relay serves those readers over, spread evenly
                     (FANOUT_STREAMS, default 1). --viewers 1000 --streams 1,10 measures
                     1 stream of 1000 viewers and 10 streams of 100 each, in turn, and adds
                     a table with the CPU of each count against 1 stream (the ratio), and
                     the memory a stream costs with no viewers. The relay reads its
                     streams from a YAML --config, each fed its own replay of the
                     recording over TCP. The floor serves as many streams, a port pair
                     each (what S streams cost the kernel and the wake-ups, at least);
                     tcpserversink runs with 1 stream only.
  --viewers-on all|first
                     with several streams: readers spread evenly over them (all), or
                     every reader on the first while the others are live without
                     viewers (first): the cost of taking in S streams apart from that
                     of splitting the viewers (FANOUT_VIEWERS_ON, default all)
  --targets LIST     servers: relay (HTTP), relay-ws (WebSocket), tcpserversink, floor
                     (FANOUT_TARGETS, default all four)
  --window S         measurement window in seconds (FANOUT_WINDOW_S, default 10)
  --reps N           repetitions; the table shows medians (FANOUT_REPS, default 1).
                     With several streams and 3 or more, the ratio to 1 stream is also
                     pooled over the repetitions, with a 95 % bootstrap interval: on a
                     noisy machine, --reps 8 says whether a ratio is beyond its noise
  --encoders LIST    viewer counts for one-encoder-per-viewer vs encode-once, or none
                     (FANOUT_ENCODERS, default 1,2,4)
  --pin on|off       server on CPU 0, readers on the others (FANOUT_PIN, default on)

The 30 s recording (FANOUT_RECORDING_S) is made once and cached in the temp directory
(FANOUT_RERECORD=1 makes a new one). The floor is bench/floor.c, compiled with cc.
The window starts 2 s after every reader has media (FANOUT_WARMUP_MS): the streams are
then a few seconds old. FANOUT_WARMUP_MS=65000 FANOUT_RECORDING_S=120 measures them
once their 60 s segment windows are full, as a relay that has run for a while.
FANOUT_RELAY_ARGS="--join next-keyframe --max-queue 8M" sets relay options (written as
top-level keys of its config file, so every stream's); FANOUT_RELAY_NODE_ARGS, node's.
FANOUT_EVENTS=1 counts the server's reads, writes, epoll waits, context switches,
page faults and wake-ups it sends in the window, per second (perf stat, as root).

One stream against ten at the same 1000 viewers, relay only:
  npm run bench:fanout -- --viewers 1000 --streams 1,10 --targets relay,relay-ws --encoders none`;
if (argv.help) {
  console.log(USAGE);
  process.exit(0);
}
const list = (text: string) => text.split(',').map((s) => s.trim()).filter((s) => s && s !== 'none');
const VIEWERS = list(argv.viewers ?? process.env.FANOUT_VIEWERS ?? '100,300,1000').map(Number);
const VIEWERS_ON = (argv['viewers-on'] ?? process.env.FANOUT_VIEWERS_ON ?? 'all') as 'all' | 'first';
if (VIEWERS_ON !== 'all' && VIEWERS_ON !== 'first') {
  console.error(`fanout: --viewers-on must be all or first, not ${VIEWERS_ON}`);
  process.exit(2);
}
const STREAMS = list(argv.streams ?? process.env.FANOUT_STREAMS ?? '1').map(Number);
const WINDOW_S = Number(argv.window ?? process.env.FANOUT_WINDOW_S ?? 10);
const REPS = Number(argv.reps ?? process.env.FANOUT_REPS ?? 1);
const ENCODERS = list(argv.encoders ?? process.env.FANOUT_ENCODERS ?? '1,2,4').map(Number);
const TARGETS = list(argv.targets ?? process.env.FANOUT_TARGETS ?? 'relay,relay-ws,tcpserversink,floor') as Target[];
for (const target of TARGETS) {
  if (![...RELAYS, ...REFERENCES].includes(target)) {
    console.error(`fanout: unknown target "${target}"\n\n${USAGE}`);
    process.exit(2);
  }
}
for (const [flag, values] of [['--viewers', VIEWERS], ['--streams', STREAMS]] as const) {
  if (values.some((v) => !Number.isInteger(v) || v < 1)) {
    console.error(`fanout: ${flag} takes whole numbers from 1, got "${values.join(',')}"\n\n${USAGE}`);
    process.exit(2);
  }
}
/** More than one stream count asked for: the streams table and the idle memory per stream. */
const MULTI = STREAMS.some((s) => s !== 1);
/** With no viewers, long enough for a few keyframes: each stream then holds what a joining viewer gets. */
const IDLE_LIVE_MS = 3000;
const WARMUP_MS = Number(process.env.FANOUT_WARMUP_MS ?? 2000);
/** Syscalls and scheduler events of the server in the window, per second (`perf stat`). */
const COUNT_EVENTS = process.env.FANOUT_EVENTS === '1';
const CPUS = os.cpus().length;
const PIN = (argv.pin ?? process.env.FANOUT_PIN ?? 'on') !== 'off' && CPUS >= 2;
/** taskset CPU lists for the server under test and for the readers, when pinning. */
const SERVER_CPUS = PIN ? '0' : undefined;
const READER_CPUS = PIN ? (CPUS === 2 ? '1' : `1-${CPUS - 1}`) : undefined;


/** Runs argv with a higher open-files limit, on `cpus` if given (taskset), keeping the PID (exec). */
function spawnWithFiles(args: string[], options: { env?: NodeJS.ProcessEnv; stdin?: 'pipe' | 'ignore'; stdinFrom?: string; cpus?: string } = {}): ChildProcess {
  const redirect = options.stdinFrom ? ` < '${options.stdinFrom}'` : '';
  const pinned = options.cpus ? ['taskset', '-c', options.cpus, ...args] : args;
  return spawn('bash', ['-c', `ulimit -n 8192 2>/dev/null; exec "$@"${redirect}`, 'bash', ...pinned], {
    env: { ...process.env, ...options.env },
    stdio: [options.stdin ?? 'ignore', 'pipe', 'pipe'],
  });
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

/** The readers process: JSON lines out, commands in. */
class Readers {
  readonly child: ChildProcess;
  private lines: Record<string, unknown>[] = [];
  private waiters: (() => void)[] = [];
  stderr = '';

  constructor(config: ReadersConfig, cpus?: string) {
    this.child = spawnWithFiles([process.execPath, READERS, JSON.stringify(config)], { stdin: 'pipe', cpus });
    let buffered = '';
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (text: string) => {
      buffered += text;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          this.lines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          continue;
        }
        for (const w of this.waiters.splice(0)) w();
      }
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
  }

  async next(type: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const at = this.lines.findIndex((l) => l.type === type);
      if (at >= 0) return this.lines.splice(at, 1)[0];
      if (this.child.exitCode !== null) throw new Error(`readers exited: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`readers: no "${type}" within ${timeoutMs} ms\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 200);
      });
    }
  }

  send(command: string): void {
    this.child.stdin!.write(`${command}\n`);
  }

  async quit(): Promise<void> {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.send('quit');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }
}

function eventsText(events: Record<string, number> | null): string {
  if (!COUNT_EVENTS) return '';
  if (!events) return '; events: perf stat failed (perf and its syscall tracepoints, as root)';
  return `; a second: ${Object.entries(events).map(([name, n]) => `${name} ${n.toFixed(0)}`).join(', ')}`;
}

interface FanoutResult {
  target: Target;
  viewers: number;
  /** Streams the viewers were spread over. */
  streams: number;
  /** Cores (CPU seconds per second) over the window. */
  cpu: number;
  /** Part of cpu spent in the kernel (0..1). */
  systemShare: number;
  readersCpu: number;
  hwm: number;
  rssBefore: number;
  rssAfter: number;
  /** RSS growth per viewer after the window (streaming), and with every viewer connected before any media. */
  perViewer: number;
  idlePerViewer: number;
  p50: number;
  p99: number;
  max: number;
  fanP50: number;
  fanP99: number;
  samples: number;
  minMbps: number;
  errors: number;
  /** Per second, with FANOUT_EVENTS=1 (null without, or without perf). */
  events: Record<string, number> | null;
}

let floorPath: string | null | undefined;
/** bench/floor.c compiled into the temp directory, once; null (said once) without a C compiler. */
function floorBinary(): string | null {
  if (floorPath !== undefined) return floorPath;
  const source = path.resolve(HERE, '../../bench/floor.c');
  const binary = path.join(os.tmpdir(), `webm-relay-floor-${process.pid}`);
  const cc = spawnSync('cc', ['-O2', '-o', binary, source], { encoding: 'utf8' });
  floorPath = cc.status === 0 ? binary : null;
  if (!floorPath) console.log(`  floor: skipped, could not compile ${source} (${cc.error?.message ?? cc.stderr.trim()}); apt-get install gcc`);
  return floorPath;
}

const words = (text: string | undefined) => (text ?? '').split(/[\s,]+/).filter(Boolean);

/**
 * FANOUT_RELAY_ARGS (`--join next-keyframe --max-queue 8M`) as top-level keys of the
 * config file, where a stream setting is every stream's default.
 */
function relayArgsAsYaml(args: string[]): string[] {
  const lines: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const flag = /^--([a-z-]+)(?:=(.*))?$/.exec(args[i]);
    if (!flag) throw new Error(`FANOUT_RELAY_ARGS: expected --option VALUE, got "${args[i]}"`);
    const value = flag[2] ?? args[++i];
    if (value === undefined) throw new Error(`FANOUT_RELAY_ARGS: ${args[i - 1]} has no value`);
    lines.push(`${flag[1]}: ${JSON.stringify(value)}`);
  }
  return lines;
}

interface RelayUnderTest {
  server: ChildProcess;
  port: number;
  streams: { name: string; ingest: string }[];
  /** Stops the relay and removes its config file. */
  stop: () => Promise<void>;
}

/**
 * The relay with `count` streams from a YAML config file, each listening for its
 * producer on a loopback TCP port of its own. One stream is called `live`, as the
 * flags would name it; several are s1, s2, ...
 */
async function startRelay(count: number): Promise<RelayUnderTest> {
  // A port freed is free to be handed out again: ask until every one is distinct.
  const ports = new Set<number>();
  while (ports.size < count + 1) ports.add(await freePort());
  const [port, ...ingestPorts] = ports;
  const streams = ingestPorts.map((p, k) => ({ name: count === 1 ? 'live' : `s${k + 1}`, ingest: `tcp:${p}` }));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fanout-relay-'));
  const file = path.join(dir, 'relay.yml');
  const settings = relayArgsAsYaml(words(process.env.FANOUT_RELAY_ARGS));
  fs.writeFileSync(
    file,
    [
      ...(settings.some((line) => line.startsWith('max-viewers:')) ? [] : ['max-viewers: 100000']),
      ...settings,
      'streams:',
      ...streams.flatMap((s) => [`  ${s.name}:`, `    listen: tcp://127.0.0.1:${s.ingest.slice(4)}`]),
      '',
    ].join('\n'),
  );
  const server = spawnWithFiles([process.execPath, ...words(process.env.FANOUT_RELAY_NODE_ARGS), CLI, '--config', file, '--host', '127.0.0.1', '--port', String(port)], {
    env: { WEBM_RELAY_LOG: 'warn' },
    cpus: SERVER_CPUS,
  });
  let log = '';
  server.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const stop = async () => {
    await stopProcess(server);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      `the relay to listen on ${count + 1} ports`,
      async () => {
        if (server.exitCode !== null) throw new Error(`the relay exited (${server.exitCode}):\n${log}`);
        for (const p of [port, ...streams.map((s) => Number(s.ingest.slice(4)))]) if (!(await listening(p))) return false;
        return true;
      },
      20_000,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return { server, port, streams, stop };
}

/** How far apart the replays of several streams start in all: one video frame. */
const spreadMs = () => 1000 / encoderConfig().framerate;

/** One server under test fed the paced recording (one replay per stream), N readers, one measurement window. */
async function runFanout(target: Target, viewers: number, streamCount: number, file: string): Promise<FanoutResult> {
  let viewerPort: number;
  let server: ChildProcess;
  let streams: { name: string; ingest: string; port?: number }[];
  let stopServer: () => Promise<void> = () => stopProcess(server);
  let fifo: string | null = null;
  let log = '';
  if (target === 'floor') {
    // An ingest port and a viewer port per stream, every one distinct.
    const ports = new Set<number>();
    while (ports.size < 2 * streamCount) ports.add(await freePort());
    const [ingestPorts, viewerPorts] = [[...ports].slice(0, streamCount), [...ports].slice(streamCount)];
    streams = ingestPorts.map((p, k) => ({ name: streamCount === 1 ? 'live' : `s${k + 1}`, ingest: `tcp:${p}`, port: viewerPorts[k] }));
    viewerPort = viewerPorts[0];
    server = spawnWithFiles([floorBinary()!, ...ingestPorts.flatMap((p, k) => [String(p), String(viewerPorts[k])])], { cpus: SERVER_CPUS });
    await waitFor('the floor server to listen', async () => {
      for (const p of ports) if (!(await listening(p))) return false;
      return true;
    });
  } else if (RELAYS.includes(target)) {
    const relay = await startRelay(streamCount);
    ({ server, streams } = relay);
    viewerPort = relay.port;
    stopServer = relay.stop;
  } else {
    viewerPort = await freePort();
    fifo = path.join(os.tmpdir(), `fanout-${process.pid}-${viewerPort}.fifo`);
    spawnSync('mkfifo', [fifo]);
    streams = [{ name: 'live', ingest: fifo }];
    // fdsrc reads whatever the pipe holds (up to 64 KiB), as the relay's socket reads do.
    server = spawnWithFiles(
      ['gst-launch-1.0', '-q', 'fdsrc', 'fd=0', 'blocksize=65536', '!', 'tcpserversink', 'host=127.0.0.1', `port=${viewerPort}`, 'sync-method=latest-keyframe', 'sync=false'],
      { stdinFrom: fifo, cpus: SERVER_CPUS },
    );
  }
  server.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const pid = server.pid!;
  const readers = new Readers(
    { protocol: target === 'relay' ? 'http' : target === 'relay-ws' ? 'ws' : 'raw', port: viewerPort, viewers, viewersOn: VIEWERS_ON, streams, recording: file, spreadMs: spreadMs(), connectAfterMs: -1 },
    READER_CPUS,
  );
  try {
    if (target === 'tcpserversink') await waitFor('tcpserversink to listen', () => listening(viewerPort));
    await readers.next('connecting');
    const rssBefore = memory(pid).rss;
    // Viewers connected, the stream's header sent, no media yet: what an idle viewer costs.
    const idle = Number((await readers.next('connected', 60_000)).connected);
    await sleep(500);
    const idlePerViewer = (memory(pid).rss - rssBefore) / idle;
    readers.send('media');
    const ready = await readers.next('ready', 60_000);
    const connected = Number(ready.connected);
    if (connected < viewers * 0.9) throw new Error(`only ${connected} of ${viewers} readers got data\n${log}\n${readers.stderr}`);
    if (connected < viewers) console.log(`  warning: ${target}: only ${connected} of ${viewers} readers got data in time`);
    await sleep(WARMUP_MS);
    readers.send('start');
    await readers.next('started');
    const stopCounting = COUNT_EVENTS ? countEvents(pid) : null;
    const cpu0 = cpuTimes(pid);
    const rcpu0 = cpuSeconds(readers.child.pid!);
    const t0 = performance.now();
    await sleep(WINDOW_S * 1000);
    readers.send('stop');
    const cpu1 = cpuTimes(pid);
    const rcpu1 = cpuSeconds(readers.child.pid!);
    const events = stopCounting ? await stopCounting() : null;
    const seconds = (performance.now() - t0) / 1000;
    const mem = memory(pid);
    const result = (await readers.next('result')) as {
      latency: { p50: number; p99: number; max: number; count: number };
      fanoutLatency: { p50: number; p99: number };
      minBitrate: number;
      senderDone: boolean;
      errors: number;
      closed: number;
    };
    if (result.senderDone) console.log(`  warning: the recording ran out before the end of the window (${target}, N=${viewers}, S=${streamCount})`);
    return {
      target,
      viewers,
      streams: streamCount,
      cpu: (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / seconds,
      systemShare: (cpu1.system - cpu0.system) / Math.max(1e-9, cpu1.user + cpu1.system - cpu0.user - cpu0.system),
      readersCpu: (rcpu1 - rcpu0) / seconds,
      hwm: mem.hwm,
      rssBefore,
      rssAfter: mem.rss,
      perViewer: (mem.rss - rssBefore) / connected,
      idlePerViewer,
      p50: result.latency.p50,
      p99: result.latency.p99,
      max: result.latency.max,
      fanP50: result.fanoutLatency.p50,
      fanP99: result.fanoutLatency.p99,
      samples: result.latency.count,
      minMbps: result.minBitrate / 1e6,
      errors: result.errors + result.closed,
      events,
    };
  } finally {
    await readers.quit().catch(() => {});
    await stopServer();
    if (fifo) fs.rmSync(fifo, { force: true });
  }
}

/**
 * RSS and CPU of the relay with `count` streams live (each fed its replay for a few
 * keyframes, so each holds what a joining viewer is sent) and no viewers. RSS is the
 * median of samples over two seconds: a single one can land on either side of a
 * garbage collection. CPU is over the same two seconds: what taking in the streams costs.
 */
async function idleStreams(count: number, file: string): Promise<{ rss: number; cpu: number }> {
  const relay = await startRelay(count);
  const readers = new Readers({ protocol: 'http', port: relay.port, viewers: 0, streams: relay.streams, recording: file, spreadMs: spreadMs(), connectAfterMs: 0 }, READER_CPUS);
  try {
    await readers.next('ready');
    await sleep(IDLE_LIVE_MS);
    const pid = relay.server.pid!;
    const cpu0 = cpuSeconds(pid);
    const t0 = performance.now();
    const samples: number[] = [];
    for (let i = 0; i < 10; i++) {
      samples.push(memory(pid).rss);
      await sleep(200);
    }
    const cpu = (cpuSeconds(pid) - cpu0) / ((performance.now() - t0) / 1000);
    const listed = (await (await fetch(`http://127.0.0.1:${relay.port}/api/streams`)).json()) as { streams: { name: string; live: boolean }[] };
    const notLive = relay.streams.filter((s) => !listed.streams.some((l) => l.name === s.name && l.live));
    if (notLive.length > 0) throw new Error(`streams not live after ${IDLE_LIVE_MS} ms of replay: ${notLive.map((s) => s.name).join(', ')}\n${readers.stderr}`);
    return { rss: median(samples), cpu };
  } finally {
    await readers.quit().catch(() => {});
    await relay.stop();
  }
}

interface EncoderResult {
  viewers: number;
  /** Seed: N pipelines, cores. */
  seed: number;
  /** Relay: its node process and its one encoder, cores. */
  relayNode: number;
  relayEncoder: number;
}

async function seedEncoders(n: number): Promise<number> {
  const args = encoderArgsWithSink(['fakesink', 'sync=false']);
  const pipelines = Array.from({ length: n }, () => spawn('gst-launch-1.0', args, { stdio: 'ignore' }));
  try {
    await sleep(WARMUP_MS);
    const before = pipelines.map((p) => cpuSeconds(p.pid!));
    const t0 = performance.now();
    await sleep(WINDOW_S * 1000);
    const after = pipelines.map((p) => cpuSeconds(p.pid!));
    const seconds = (performance.now() - t0) / 1000;
    if (pipelines.some((p) => p.exitCode !== null)) throw new Error('a seed pipeline exited early');
    return after.reduce((sum, a, i) => sum + a - before[i], 0) / seconds;
  } finally {
    await Promise.all(pipelines.map((p) => stopProcess(p)));
  }
}

async function relayEncodingOnce(n: number): Promise<{ node: number; encoder: number }> {
  const port = await freePort();
  const relay = spawnWithFiles([process.execPath, CLI, '--host', '127.0.0.1', '--port', String(port), '--video-bitrate', String(VIDEO_BITRATE_KBPS)], {
    env: { WEBM_RELAY_LOG: 'warn' },
  });
  let readers: Readers | null = null;
  try {
    await waitFor('the relay to go live', async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => null))?.status === 200, 20_000);
    const stats = (await (await fetch(`http://127.0.0.1:${port}/api/stats`)).json()) as { encoder: { pid: number | null } | null };
    const encoderPid = stats.encoder?.pid;
    if (!encoderPid) throw new Error('no encoder pid in /api/stats');
    readers = new Readers({ protocol: 'http', port, viewers: n, streams: [{ name: 'live' }], connectAfterMs: 0 });
    await readers.next('ready');
    await sleep(WARMUP_MS);
    const node0 = cpuSeconds(relay.pid!);
    const enc0 = cpuSeconds(encoderPid);
    const t0 = performance.now();
    await sleep(WINDOW_S * 1000);
    const seconds = (performance.now() - t0) / 1000;
    return { node: (cpuSeconds(relay.pid!) - node0) / seconds, encoder: (cpuSeconds(encoderPid) - enc0) / seconds };
  } finally {
    await readers?.quit().catch(() => {});
    await stopProcess(relay);
  }
}

// --- report ------------------------------------------------------------------------

const f = (x: number, digits = 2) => (Number.isFinite(x) ? x.toFixed(digits) : '-');
const kib = (bytes: number) => (Number.isFinite(bytes) ? `${(bytes / 1024).toFixed(1)}` : '-');
const mib = (bytes: number) => (Number.isFinite(bytes) ? `${(bytes / 1048576).toFixed(1)}` : '-');

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function medianResult(results: FanoutResult[]): FanoutResult {
  const m = (key: keyof FanoutResult) => median(results.map((r) => r[key] as number));
  return {
    target: results[0].target,
    viewers: results[0].viewers,
    streams: results[0].streams,
    cpu: m('cpu'),
    systemShare: m('systemShare'),
    readersCpu: m('readersCpu'),
    hwm: m('hwm'),
    rssBefore: m('rssBefore'),
    rssAfter: m('rssAfter'),
    perViewer: m('perViewer'),
    idlePerViewer: m('idlePerViewer'),
    p50: m('p50'),
    p99: m('p99'),
    max: m('max'),
    fanP50: m('fanP50'),
    fanP99: m('fanP99'),
    samples: m('samples'),
    minMbps: m('minMbps'),
    errors: m('errors'),
    // A repetition perf could not count leaves the median unknown, not NaN.
    events: results.every((r) => r.events) ? Object.fromEntries(Object.keys(results[0].events!).map((k) => [k, median(results.map((r) => r.events![k]))])) : null,
  };
}

async function main(): Promise<void> {
  const started = Date.now();
  const host = machine();
  console.log(`fanout bench: ${host.cpu}, ${host.cores} cores, ${host.kernel}, node ${host.node}, GStreamer ${host.gstreamer}`);
  const pinning = PIN ? `server on CPU ${SERVER_CPUS}, readers on CPU ${READER_CPUS}` : 'not pinned';
  console.log(`viewers ${VIEWERS.join(',')}${MULTI ? ` over ${STREAMS.join(',')} streams` : ''}; window ${WINDOW_S} s after ${WARMUP_MS / 1000} s warm-up; ${REPS} repetition(s), medians; ${pinning}`);
  const file = await recording(RECORDING_S);
  const plan = sendPlan(fs.readFileSync(file));
  console.log(
    `recording: ${file}, ${(plan.durationMs / 1000).toFixed(1)} s, ${(plan.bitrate / 1e6).toFixed(2)} Mbit/s, ${plan.clusters} clusters, ${plan.keyframes} keyframes, replayed in ${plan.writes.length} paced writes`,
  );

  const runs = new Map<string, FanoutResult[]>();
  /** Streams -> RSS and CPU with them live and no viewers, one per repetition. */
  const idle = new Map<number, { rss: number; cpu: number }[]>();
  const relayTargets = TARGETS.filter((t) => RELAYS.includes(t));
  const streamTargets = TARGETS.filter((t) => SERVES_STREAMS.includes(t));
  if (MULTI && STREAMS.includes(1) === false) console.log('  note: --streams has no 1: no ratio to one stream (the memory per stream still measures 1 stream)');
  if (MULTI && TARGETS.includes('tcpserversink')) console.log('  note: tcpserversink serves one stream: measured with --streams 1 only');
  for (let rep = 0; rep < REPS; rep++) {
    if (MULTI && relayTargets.length > 0) {
      for (const count of [...new Set([1, ...STREAMS])].sort((a, b) => a - b)) {
        const r = await idleStreams(count, file);
        idle.set(count, [...(idle.get(count) ?? []), r]);
        console.log(`  [${rep + 1}/${REPS}] relay, S=${count} live, no viewers: rss ${mib(r.rss)} MiB, cpu ${f(r.cpu, 3)} cores`);
      }
    }
    for (const n of VIEWERS) {
      for (const target of TARGETS) {
        if (target === 'floor' && !floorBinary()) continue;
        // Every other repetition in reverse, so a machine that drifts during the run does not favour one count.
        for (const streams of rep % 2 ? [...STREAMS].reverse() : STREAMS) {
          if (streams !== 1 && !SERVES_STREAMS.includes(target)) continue;
          const r = await runFanout(target, n, streams, file);
          console.log(
            `  [${rep + 1}/${REPS}] ${target.padEnd(13)} N=${String(n).padStart(4)}${MULTI ? ` S=${String(streams).padStart(2)}` : ''}: cpu ${f(r.cpu, 3)} cores (${(r.systemShare * 100).toFixed(0)} % system), rss +${kib(r.idlePerViewer)} KiB/viewer idle, +${kib(r.perViewer)} streaming, hwm ${mib(r.hwm)} MiB, latency p50 ${f(r.p50, 1)} p99 ${f(r.p99, 1)} ms (fan-out p99 ${f(r.fanP99, 1)}), ${r.samples} samples, readers ${f(r.readersCpu)} cores, min ${f(r.minMbps)} Mbit/s${r.errors ? `, ${r.errors} errors` : ''}${eventsText(r.events)}`,
          );
          const key = `${target}/${n}/${streams}`;
          runs.set(key, [...(runs.get(key) ?? []), r]);
        }
      }
    }
  }

  const encoders: EncoderResult[] = [];
  for (const n of ENCODERS) {
    const seed = await seedEncoders(n);
    const once = await relayEncodingOnce(n);
    encoders.push({ viewers: n, seed, relayNode: once.node, relayEncoder: once.encoder });
    console.log(`  encoders N=${n}: seed ${f(seed)} cores; relay ${f(once.encoder)} (gst) + ${f(once.node)} (node) cores`);
  }

  console.log('');
  console.log(`Machine: ${host.cpu}, ${host.cores} cores; node ${host.node}; GStreamer ${host.gstreamer}; stream ${(plan.bitrate / 1e6).toFixed(2)} Mbit/s VP8+Opus`);
  console.log(`Window ${WINDOW_S} s, ${REPS} repetition(s), medians, ${pinning}. CPU in cores (CPU-seconds per second); latency: cluster bytes into the ingest -> at the reader.`);
  if (VIEWERS.length > 0 && TARGETS.length > 0) {
    const rows: string[][] = [];
    // The floor's memory is the kernel's, which RSS does not show: no memory ratio to it.
    const ratioRow = (label: string, n: number, a: FanoutResult, b: FanoutResult) => [
      `  ${label}`,
      String(n),
      f(a.cpu / b.cpu),
      b.target === 'floor' ? '-' : f(a.hwm / b.hwm),
      b.target === 'floor' ? '-' : f(a.idlePerViewer / b.idlePerViewer),
      b.target === 'floor' ? '-' : f(a.perViewer / b.perViewer),
      f(a.p50 / b.p50),
      f(a.p99 / b.p99),
      '',
    ];
    for (const n of VIEWERS) {
      const get = (t: Target) => (runs.has(`${t}/${n}/1`) ? medianResult(runs.get(`${t}/${n}/1`)!) : null);
      for (const target of [...RELAYS, ...REFERENCES]) {
        const r = get(target);
        if (r) rows.push([r.target, String(n), f(r.cpu, 3), mib(r.hwm), kib(r.idlePerViewer), kib(r.perViewer), f(r.p50, 1), f(r.p99, 1), f(r.minMbps)]);
      }
      for (const relay of RELAYS.map(get)) {
        for (const reference of REFERENCES.map(get)) {
          if (relay && reference) rows.push(ratioRow(`${relay.target}/${reference.target}`, n, relay, reference));
        }
      }
    }
    console.log(table(['server', 'N', 'CPU cores', 'peak RSS MiB', 'KiB/viewer idle', 'KiB/viewer streaming', 'lat p50 ms', 'lat p99 ms', 'min Mbit/s'], rows));
    console.log('KiB/viewer: RSS growth per viewer, once every viewer is connected before any media (idle), and after the window (streaming).');
  }
  if (MULTI && streamTargets.length > 0) {
    console.log('');
    console.log(`Streams: ${VIEWERS_ON === 'first' ? 'every viewer on the first of S streams, the others live with no viewers' : 'the same viewers spread evenly over S streams'}, each stream fed its own replay (starts ${f(spreadMs(), 1)} ms apart in all).`);
    const rows: string[][] = [];
    const eventLines: string[] = [];
    for (const n of VIEWERS) {
      for (const target of streamTargets) {
        const get = (streams: number) => (runs.has(`${target}/${n}/${streams}`) ? medianResult(runs.get(`${target}/${n}/${streams}`)!) : null);
        const one = get(1);
        // Each repetition measures every count back to back: its own ratio is free of the machine's drift between repetitions.
        const cpuOfEach = (streams: number) => (runs.get(`${target}/${n}/${streams}`) ?? []).map((r) => r.cpu);
        const perRepetition = (streams: number) => {
          const ones = cpuOfEach(1);
          const ratios = cpuOfEach(streams).map((cpu, i) => cpu / ones[i]).filter(Number.isFinite);
          return ratios.length === 0 || streams === 1 ? '-' : `${f(Math.min(...ratios))}-${f(Math.max(...ratios))}`;
        };
        const pooled = (streams: number) => {
          const p = streams === 1 ? null : pairedRatio(cpuOfEach(streams), cpuOfEach(1));
          return p ? `${f(p.ratio)} (${f(p.low)}-${f(p.high)})` : '-';
        };
        for (const streams of STREAMS) {
          const r = get(streams);
          if (!r) continue;
          const perStream = n % streams === 0 ? String(n / streams) : `${Math.floor(n / streams)}-${Math.ceil(n / streams)}`;
          rows.push([r.target, String(n), String(streams), perStream, f(r.cpu, 3), one ? f(r.cpu / one.cpu) : '-', perRepetition(streams), pooled(streams), f(r.p50, 1), f(r.p99, 1), mib(r.hwm), f(r.minMbps)]);
          if (COUNT_EVENTS) eventLines.push(`  ${r.target} ${n} viewers over ${streams} stream(s)${eventsText(r.events)}`);
        }
      }
    }
    console.log(table(['server', 'viewers', 'streams', 'per stream', 'CPU cores', '× 1 stream', 'each repetition', 'pooled (95 %)', 'lat p50 ms', 'lat p99 ms', 'peak RSS MiB', 'min Mbit/s'], rows));
    console.log('× 1 stream: CPU against the same number of viewers on one stream, from the medians (the goal: 1.15 or less with 100 viewers a stream);');
    console.log('each repetition: the lowest and highest ratio of one repetition\'s two measurements, taken back to back;');
    console.log('pooled: the mean CPU of every repetition against that of one stream, with the 95 % interval of a bootstrap over the repetitions\' pairs (3 repetitions or more).');
    if (eventLines.length > 0) console.log(`The server's events (medians):\n${eventLines.join('\n')}`);
  }
  if (MULTI && idle.size > 0) {
    console.log('');
    const idleMedian = (count: number, key: 'rss' | 'cpu') => median((idle.get(count) ?? []).map((r) => r[key]));
    console.log(
      table(
        ['streams live, no viewers', 'RSS MiB', 'KiB per stream', 'CPU cores', 'cores per stream'],
        [...idle.keys()].sort((a, b) => a - b).map((count) => {
          const perStream = (key: 'rss' | 'cpu') => (idleMedian(count, key) - idleMedian(1, key)) / (count - 1);
          return [String(count), mib(idleMedian(count, 'rss')), count === 1 ? '-' : kib(perStream('rss')), f(idleMedian(count, 'cpu'), 3), count === 1 ? '-' : f(perStream('cpu'), 4)];
        }),
      ),
    );
    console.log('Per stream: (figure with S streams - figure with 1) / (S - 1), from the medians of the repetitions.');
    console.log(`Streams ${IDLE_LIVE_MS / 1000} s live: each then holds --segment-window (60 s by default) of its media in memory once that has passed.`);
  }
  if (encoders.length > 0) {
    console.log('');
    console.log(
      table(
        ['viewers', 'seed: N encoders', 'relay: encoder', 'relay: node', 'relay total', 'seed/relay'],
        encoders.map((e) => [String(e.viewers), f(e.seed), f(e.relayEncoder), f(e.relayNode), f(e.relayEncoder + e.relayNode), f(e.seed / (e.relayEncoder + e.relayNode))]),
      ),
    );
  }
  console.log(`\n(${((Date.now() - started) / 1000).toFixed(0)} s)`);
}

// The compiled floor goes with the run that made it, also when it fails.
process.on('exit', () => floorPath && fs.rmSync(floorPath, { force: true }));

main().catch((error: Error) => {
  console.error(error.stack ?? String(error));
  process.exit(1);
});
