/**
 * Helpers for bench/fanout.ts: the recording, the paced send plan, /proc figures.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseConfig } from '../src/config/flags.js';
import type { EncoderSettings } from '../src/config/options.js';
import { encoderArgs } from '../src/source/gst-args.js';
import { WebmSplitter } from '../src/webm/splitter.js';

/** The relay's default encoder settings, at about 2 Mbit/s (what the bench streams). */
export const VIDEO_BITRATE_KBPS = Number(process.env.FANOUT_VIDEO_KBPS ?? 2000);

export function encoderConfig(extra: string[] = []): EncoderSettings {
  const config = parseConfig(['--video-bitrate', String(VIDEO_BITRATE_KBPS), ...extra], {});
  if (config === 'help') throw new Error('unreachable');
  const producer = config.streams[0].producer;
  if (producer.kind !== 'encoder') throw new Error('unreachable');
  return producer.encoder;
}

/** The relay's own gst-launch arguments with `tcpclientsink ...` replaced by `sink`. */
export function encoderArgsWithSink(sink: string[], config = encoderConfig()): string[] {
  const args = encoderArgs(config, 1);
  const at = args.indexOf('tcpclientsink');
  if (at < 0) throw new Error('encoderArgs() has no tcpclientsink');
  let end = at + 1;
  while (end < args.length && args[end] !== '!' && args[end].includes('=')) end++;
  args.splice(at, end - at, ...sink);
  return args;
}

/**
 * Records `seconds` of the relay's default stream once (cached in the temp directory).
 * The sources are not live and the queues do not leak, so every frame is encoded
 * whatever else the machine is doing: 30 fps, a keyframe every 30 frames, the CBR
 * bitrate. A live recording on a busy machine drops frames and spaces keyframes out.
 */
export async function recording(seconds: number): Promise<string> {
  const file = path.join(os.tmpdir(), `webm-relay-fanout-${VIDEO_BITRATE_KBPS}k-${seconds}s.webm`);
  if (fs.existsSync(file) && fs.statSync(file).size > 10_000 && !process.env.FANOUT_RERECORD) return file;
  const partial = `${file}.partial`;
  const defaults = encoderConfig();
  const config = encoderConfig([
    '--video-source', `${defaults.videoSource.replace('is-live=true', 'is-live=false')} num-buffers=${seconds * defaults.framerate}`,
    '--audio-source', `${defaults.audioSource!.replace('is-live=true', 'is-live=false')} samplesperbuffer=960 num-buffers=${seconds * 50} ! audio/x-raw,rate=48000`,
  ]);
  const args = encoderArgsWithSink(['filesink', `location=${partial}`], config).filter((a) => a !== 'leaky=downstream');
  const result = spawnSync('gst-launch-1.0', args, { encoding: 'utf8', timeout: 300_000 });
  if (result.status !== 0 || !fs.existsSync(partial) || fs.statSync(partial).size < 10_000) {
    throw new Error(`recording failed (gst-launch-1.0 ${args.join(' ')}):\n${result.stderr}`);
  }
  fs.renameSync(partial, file);
  return file;
}

/** One write of the paced replay. */
export interface PlannedWrite {
  /** Byte range of the recording. */
  start: number;
  end: number;
  /** When to write it, ms after the first write (the stream's own timecodes). */
  at: number;
  /** Cluster timecodes whose bytes (cluster start or video keyframe) are in this write. */
  marks: number[];
  /** Keyframe timecodes that every track has passed once this write is in (a reordering relay can release them). */
  releases: number[];
}

export interface SendPlan {
  headerEnd: number;
  writes: PlannedWrite[];
  durationMs: number;
  clusters: number;
  keyframes: number;
  bitrate: number;
}

/**
 * Cuts the recording into the writes a live muxer would make: each block (with any
 * cluster header before it) is written when its timecode comes due, blocks whose
 * timecode is behind one already written go out at once.
 */
export function sendPlan(bytes: Buffer): SendPlan {
  let headerEnd = -1;
  let msPerTick = 1;
  const video = new Set<number>();
  const clusters: { offset: number; timecode: number }[] = [];
  const blocks: { end: number; time: number; track: number; videoKey: boolean }[] = [];
  const splitter = new WebmSplitter({
    header: (h) => {
      headerEnd = h.offset + h.bytes.length;
      msPerTick = h.info.timecodeScale / 1e6;
      for (const t of h.info.tracks) if (t.kind === 'video') video.add(t.number);
    },
    cluster: (c) => clusters.push({ offset: c.offset, timecode: c.timecode }),
    block: (b) => blocks.push({ end: b.offset + b.size, time: b.timecode * msPerTick, track: b.track, videoKey: b.keyframe && video.has(b.track) }),
    end: () => {},
    error: (e) => {
      if (e.code !== 'TRUNCATED') throw e;
    },
  });
  splitter.feed(bytes);
  splitter.end();
  if (headerEnd < 0 || blocks.length === 0) throw new Error('recording has no header or no blocks');

  const writes: PlannedWrite[] = [];
  let pos = headerEnd;
  let due = -Infinity;
  let ci = 0;
  const first = blocks[0].time;
  const latest = new Map<number, number>();
  const waiting: number[] = []; // keyframe times not yet passed by every track
  let keyframes = 0;
  for (const block of blocks) {
    due = Math.max(due, block.time);
    const marks: number[] = [];
    while (ci < clusters.length && clusters[ci].offset < block.end) marks.push(clusters[ci++].timecode * msPerTick);
    if (block.videoKey) {
      keyframes++;
      if (!marks.includes(block.time)) marks.push(block.time);
      waiting.push(block.time);
    }
    latest.set(block.track, Math.max(block.time, latest.get(block.track) ?? -Infinity));
    const safe = Math.min(...latest.values());
    const releases: number[] = [];
    while (waiting.length > 0 && waiting[0] <= safe) releases.push(waiting.shift()!);
    const last = writes[writes.length - 1];
    if (last && last.at === due - first) {
      last.end = block.end;
      last.marks.push(...marks);
      last.releases.push(...releases);
    } else {
      writes.push({ start: pos, end: block.end, at: due - first, marks, releases });
    }
    pos = block.end;
  }
  const durationMs = due - first;
  return { headerEnd, writes, durationMs, clusters: clusters.length, keyframes, bitrate: ((pos - headerEnd) * 8) / (durationMs / 1000) };
}

// --- /proc ------------------------------------------------------------------------

export const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim() || 100);

/** utime + stime of a process, in seconds (0 if it is gone). */
export function cpuSeconds(pid: number): number {
  const { user, system } = cpuTimes(pid);
  return user + system;
}

/**
 * utime and stime of a process apart, in seconds: on loopback the kernel delivers a
 * write to the reader's socket in the writer's system time, so the split tells
 * JavaScript work from per-write kernel work.
 */
export function cpuTimes(pid: number): { user: number; system: number } {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    return { user: Number(fields[11]) / CLOCK_TICKS, system: Number(fields[12]) / CLOCK_TICKS };
  } catch {
    return { user: 0, system: 0 };
  }
}

/**
 * What `countEvents` counts: the kernel's side of a wake-up, a read and a write, and
 * the page faults of memory touched for the first time (dear in a virtual machine).
 */
const COUNTED_EVENTS = {
  read: 'syscalls:sys_enter_read',
  write: 'syscalls:sys_enter_write',
  'epoll wait': 'syscalls:sys_enter_epoll_pwait',
  'context switch': 'context-switches',
  'wake-up sent': 'sched:sched_waking',
  'page fault': 'page-faults',
};

/**
 * Counts syscalls and scheduler events of a process with `perf stat` until the returned
 * function is called, which resolves to counts per second (null where perf or its
 * tracepoints are missing). What a stream costs apart from its bytes is mostly in these:
 * CPU profiles of JavaScript do not see it.
 */
export function countEvents(pid: number): () => Promise<Record<string, number> | null> {
  const file = path.join(os.tmpdir(), `fanout-perf-${pid}-${Date.now()}.txt`);
  const started = performance.now();
  const perf = spawn('perf', ['stat', '-x', ',', '-o', file, '-e', Object.values(COUNTED_EVENTS).join(','), '-p', String(pid)], { stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => {
    perf.on('exit', resolve);
    perf.on('error', () => resolve(null));
  });
  return async () => {
    const seconds = (performance.now() - started) / 1000;
    perf.kill('SIGINT');
    await exited;
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
      fs.rmSync(file);
    } catch {
      return null;
    }
    const counts: Record<string, number> = {};
    for (const [name, event] of Object.entries(COUNTED_EVENTS)) {
      const line = text.split('\n').find((l) => l.split(',')[2] === event);
      const value = Number(line?.split(',')[0]);
      if (!Number.isFinite(value)) return null;
      counts[name] = value / seconds;
    }
    return counts;
  };
}

/** VmRSS and VmHWM, in bytes. */
export function memory(pid: number): { rss: number; hwm: number } {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return { rss: 0, hwm: 0 };
  }
}

export function machine(): { cpu: string; cores: number; node: string; kernel: string; gstreamer: string } {
  const gst = spawnSync('gst-launch-1.0', ['--version'], { encoding: 'utf8' }).stdout ?? '';
  return {
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    cores: os.cpus().length,
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    gstreamer: /version (\S+)/.exec(gst)?.[1] ?? 'unknown',
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function quantile(sorted: Float64Array | number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i];
}

/**
 * The ratio of the means of `a` and `b`, paired figures (a[i] and b[i] measured back to
 * back), with a 95 % interval from resampling the pairs (a percentile bootstrap). The
 * machine's drift between repetitions is shared by both figures of a pair, so it moves
 * the ratio less than either figure. Seeded: the same figures give the same interval.
 * Null with fewer than three pairs, too few to say how far the ratio could be.
 */
export function pairedRatio(a: number[], b: number[], draws = 10_000): { ratio: number; low: number; high: number; pairs: number } | null {
  const pairs = a.map((x, i) => [x, b[i]] as const).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && y > 0);
  const n = pairs.length;
  if (n < 3) return null;
  let state = 0x2545f491;
  const random = () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 2 ** 32;
  };
  const ratios = new Float64Array(draws);
  for (let d = 0; d < draws; d++) {
    let sumA = 0;
    let sumB = 0;
    for (let i = 0; i < n; i++) {
      const [x, y] = pairs[Math.floor(random() * n)];
      sumA += x;
      sumB += y;
    }
    ratios[d] = sumA / sumB;
  }
  ratios.sort();
  const sum = (k: 0 | 1) => pairs.reduce((s, p) => s + p[k], 0);
  return { ratio: sum(0) / sum(1), low: quantile(ratios, 0.025), high: quantile(ratios, 0.975), pairs: n };
}
