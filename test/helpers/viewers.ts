/**
 * Helpers for the relay integration suite: what a viewer's bytes look like cluster by
 * cluster, ffmpeg decoding of many captures at once, raw sockets that stop reading,
 * and the relay process' memory.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { gstChildren } from './faults.js';
import type { RunningRelay } from './relay.js';
import type { StreamInfo } from '../../src/webm/header.js';
import { WebmSplitter } from '../../src/webm/splitter.js';

import { sleep } from './relay.js';
export { sleep };

export interface ParsedBlock {
  track: number;
  /** Absolute timestamp, ticks. */
  timecode: number;
  keyframe: boolean;
  video: boolean;
}

export interface ParsedCluster {
  /** Stream offset of the Cluster element. */
  offset: number;
  timecode: number;
  /** The cluster's bytes: from its ID to the next Cluster (or the end of the capture). */
  bytes: Buffer;
  blocks: ParsedBlock[];
  /** Another Cluster followed it in the capture: nothing of it was cut off. */
  complete: boolean;
}

export interface ParsedStream {
  /** Everything before the first Cluster (the init segment, as a viewer receives it). */
  init: Buffer | null;
  info: StreamInfo | null;
  /** Number of EBML headers seen (a second one would be a new init segment mid-stream). */
  headers: number;
  clusters: ParsedCluster[];
  /** Splitter errors other than a capture cut mid-element. */
  errors: string[];
}

/** Splits a capture into its init segment and clusters, with each cluster's blocks. */
export function parseStream(bytes: Buffer): ParsedStream {
  const out: ParsedStream = { init: null, info: null, headers: 0, clusters: [], errors: [] };
  const video = new Set<number>();
  const starts: { offset: number; timecode: number; blocks: ParsedBlock[] }[] = [];
  const splitter = new WebmSplitter(
    {
      header: (h) => {
        out.headers++;
        if (out.init === null) {
          out.info = h.info;
          for (const t of h.info.tracks) if (t.kind === 'video') video.add(t.number);
        }
      },
      cluster: (c) => {
        if (out.init === null) out.init = bytes.subarray(0, c.offset);
        starts.push({ offset: c.offset, timecode: c.timecode, blocks: [] });
      },
      block: (b) => starts[starts.length - 1]?.blocks.push({ track: b.track, timecode: b.timecode, keyframe: b.keyframe, video: video.has(b.track) }),
      end: () => {},
      error: (e) => {
        if (e.code !== 'TRUNCATED') out.errors.push(`${e.code}: ${e.message}`);
      },
    },
    { maxHeaderSize: 16 << 20, maxElementSize: 64 << 20 },
  );
  splitter.feed(bytes);
  starts.forEach((s, i) => {
    const end = i + 1 < starts.length ? starts[i + 1].offset : bytes.length;
    out.clusters.push({ ...s, bytes: bytes.subarray(s.offset, end), complete: i + 1 < starts.length });
  });
  return out;
}

/** Index in `earlier` where `later` (complete clusters only) continues as an exact contiguous run, or a description of the mismatch. */
export function contiguousRun(earlier: ParsedCluster[], later: ParsedCluster[]): { at: number; compared: number } | string {
  const a = earlier.filter((c) => c.complete);
  const b = later.filter((c) => c.complete);
  if (b.length === 0) return 'the later capture has no complete cluster';
  const at = a.findIndex((c) => c.bytes.equals(b[0].bytes));
  if (at < 0) return `the later capture's first cluster (timecode ${b[0].timecode}) is not among the earlier capture's ${a.length} clusters`;
  const compared = Math.min(a.length - at, b.length);
  for (let i = 0; i < compared; i++) {
    if (!a[at + i].bytes.equals(b[i].bytes)) {
      return `cluster ${i} of the later capture (timecode ${b[i].timecode}, ${b[i].bytes.length} bytes) differs from cluster ${at + i} of the earlier (timecode ${a[at + i].timecode}, ${a[at + i].bytes.length} bytes)`;
    }
  }
  return { at, compared };
}

/** Places where a block's timestamp is smaller than the one before it in the same cluster (any track). */
export function backwardsInClusters(clusters: ParsedCluster[]): string[] {
  const found: string[] = [];
  for (const c of clusters) {
    for (let i = 1; i < c.blocks.length; i++) {
      const [p, b] = [c.blocks[i - 1], c.blocks[i]];
      if (b.timecode < p.timecode) found.push(`cluster ${c.timecode}: track ${p.track} @${p.timecode} then track ${b.track} @${b.timecode}`);
    }
  }
  return found;
}

/**
 * `ffmpeg -v error` lines for decoding `bytes` (asynchronous, so several run at once).
 * Decoded at WebM's millisecond resolution, as the normalizer's own test does: by default
 * ffmpeg counts output timestamps in frame intervals, and two frames a millisecond apart
 * (video that lagged its audio past the reorder window at an encoder's start, which the
 * normalizer moves forward frame by frame) read as "non monotonically increasing dts".
 * Frames on one millisecond, or going back, still fail.
 */
export function decodeErrors(bytes: Buffer): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const args = ['-hide_banner', '-nostdin', '-v', 'error', '-i', 'pipe:0', '-fps_mode', 'passthrough', '-enc_time_base', '1:1000', '-f', 'null', '-'];
    const child = spawn('ffmpeg', args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (t: string) => (stderr += t));
    child.stdin.on('error', () => {}); // ffmpeg may stop reading early; its stderr says why
    child.once('error', reject);
    child.once('close', (code) => {
      const lines = stderr.split('\n').filter((l) => l.trim() !== '');
      if (code !== 0 && lines.length === 0) lines.push(`ffmpeg exited with ${code}`);
      resolve(lines);
    });
    child.stdin.end(bytes);
  });
}

/** Runs `task` over `items`, `parallel` at a time. */
export async function mapLimit<T, R>(items: T[], parallel: number, task: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await task(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, items.length) }, worker));
  return results;
}

/**
 * A viewer that sends `GET /live.webm` on a raw socket and then reads nothing: the
 * socket is paused, so once Node's small read buffer is full the kernel's receive
 * window closes and the relay's queue for it grows. `resumeAndWaitClose` starts
 * reading again and tells whether the relay had closed the connection.
 */
export class StalledSocket {
  readonly socket: net.Socket;
  closedAt = 0;
  readonly connected: Promise<void>;

  constructor(port: number, path = '/live.webm') {
    this.socket = net.connect({ port, host: '127.0.0.1', highWaterMark: 1024 } as net.NetConnectOpts);
    this.socket.on('error', () => {});
    this.socket.once('close', () => (this.closedAt = Date.now()));
    this.connected = new Promise((resolve, reject) => {
      this.socket.once('connect', () => {
        this.socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
        this.socket.pause();
        resolve();
      });
      this.socket.once('error', reject);
    });
  }

  /**
   * Reads again, for up to `ms`: 'closed' if the connection ends (the relay closed it),
   * 'ended' if the chunked body ends (the relay ended the response; the connection may
   * stay open as an idle keep-alive), 'open' if data keeps coming.
   */
  async resumeAndWaitClose(ms: number): Promise<'closed' | 'ended' | 'open'> {
    if (this.socket.destroyed) return 'closed';
    let tail = Buffer.alloc(0);
    const done = new Promise<'closed' | 'ended'>((resolve) => {
      this.socket.once('close', () => resolve('closed'));
      this.socket.once('end', () => resolve('closed'));
      this.socket.on('data', (chunk: Buffer) => {
        tail = Buffer.concat([tail, chunk.subarray(-7)]).subarray(-7);
        if (tail.toString('latin1') === '\r\n0\r\n\r\n') resolve('ended');
      });
    });
    this.socket.resume();
    return Promise.race([done, sleep(ms).then(() => 'open' as const)]);
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/**
 * Stops a relay started by the harness: SIGTERM, then SIGKILL (to it and to any
 * gst-launch-1.0 it left) if it is still there after `graceMs`.
 */
export async function shutdown(relay: RunningRelay | null | undefined, graceMs = 3000): Promise<void> {
  if (!relay) return;
  const pid = relay.process.pid!;
  const exited = relay.stop('SIGTERM');
  const late = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (late) {
    for (const child of gstChildren(pid)) process.kill(child, 'SIGKILL');
    relay.process.kill('SIGKILL');
    await exited;
  }
}

/** Overlap of two captures of one stream taken at about the same time: whichever starts later must continue as an exact run of the other. */
export function overlap(a: ParsedCluster[], b: ParsedCluster[]): { at: number; compared: number; laterIs: 'a' | 'b' } | string {
  const ab = contiguousRun(a, b);
  if (typeof ab !== 'string') return { ...ab, laterIs: 'b' };
  const ba = contiguousRun(b, a);
  if (typeof ba !== 'string') return { ...ba, laterIs: 'a' };
  return `${ab}; and the other way round: ${ba}`;
}
