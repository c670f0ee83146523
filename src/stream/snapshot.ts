import { spawn } from 'node:child_process';
import { logger } from '../log.js';
import type { CloseReason } from '../protocol.js';
import type { BlockEvent, ClusterEvent, StreamSink, VersionedInit } from './events.js';
import type { Stream } from './stream.js';

const log = logger('snapshot');

/** A decoder that has not answered by then is killed: a snapshot is not worth a stuck process. */
const DECODE_TIMEOUT_MS = 5000;
/** Largest JPEG accepted from the decoder. */
const MAX_JPEG_BYTES = 8 << 20;

/**
 * The latest keyframe of a stream, kept as the bytes a decoder needs: the init
 * segment, the keyframe's cluster header and its video block (one frame, nothing after).
 */
class KeyframeKeeper implements StreamSink {
  init: VersionedInit | null = null;
  /** Sequence number of the kept keyframe's cluster, and its bytes. */
  seq = -1;
  bytes: Buffer | null = null;
  private pendingCluster: ClusterEvent | null = null;
  live = false;

  initChanged(init: VersionedInit): void {
    this.init = init;
    this.bytes = null;
    this.pendingCluster = null;
  }
  clusterStarted(cluster: ClusterEvent): void {
    this.pendingCluster = cluster.keyframe ? cluster : null;
  }
  block(block: BlockEvent): void {
    const cluster = this.pendingCluster;
    if (!cluster || !block.video || !block.keyframe || !this.init) return;
    this.pendingCluster = null;
    this.seq = cluster.seq;
    this.bytes = Buffer.concat([this.init.segment.bytes, cluster.bytes, ...block.parts]);
  }
  flush(): void {}
  producerStarted(): void {
    this.live = true;
  }
  producerEnded(): void {
    this.live = false;
  }
  close(_reason: CloseReason): void {
    this.bytes = null;
  }
}

/** The decoder's output as one JPEG when it is a whole one (start and end-of-image markers), else null. */
function wholeJpeg(chunks: Buffer[]): Buffer | null {
  const jpeg = Buffer.concat(chunks);
  const whole = jpeg.length > 4 && jpeg[0] === 0xff && jpeg[1] === 0xd8 && jpeg[jpeg.length - 2] === 0xff && jpeg[jpeg.length - 1] === 0xd9;
  return whole ? jpeg : null;
}

/**
 * `/<name>/snapshot.jpg`: the latest keyframe of each stream as a JPEG, decoded on
 * demand by a short-lived gst-launch-1.0 with a timeout, at most once per keyframe
 * (requests that arrive while one decodes share it), and cached until the next one.
 */
export class Snapshots {
  private readonly keepers = new Map<string, KeyframeKeeper>();
  private readonly cache = new Map<string, { seq: number; jpeg: Promise<Buffer | null> }>();
  private closed = false;

  constructor(
    streams: ReadonlyMap<string, Stream>,
    private readonly gstLaunch: string,
  ) {
    for (const [name, stream] of streams) {
      const keeper = new KeyframeKeeper();
      this.keepers.set(name, keeper);
      stream.addSink(keeper);
    }
  }

  /** The JPEG of the stream's latest keyframe; null when it is not live or cannot be decoded. */
  async jpeg(name: string): Promise<Buffer | null> {
    const keeper = this.keepers.get(name);
    if (!keeper || !keeper.live || !keeper.bytes || this.closed) return null;
    const cached = this.cache.get(name);
    if (cached && cached.seq === keeper.seq) return cached.jpeg;
    const jpeg = this.decode(name, keeper.bytes);
    this.cache.set(name, { seq: keeper.seq, jpeg });
    return jpeg;
  }

  private decode(name: string, webm: Buffer): Promise<Buffer | null> {
    // decodebin finds the demuxer and decoder for whatever codec the stream has;
    // jpegenc snapshot=true ends the pipeline after the first picture.
    const args = ['-q', 'fdsrc', 'fd=0', '!', 'decodebin', '!', 'videoconvert', '!', 'jpegenc', 'snapshot=true', '!', 'fdsink', 'fd=1'];
    return new Promise((resolve) => {
      const child = spawn(this.gstLaunch, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      let size = 0;
      let stderr = '';
      let settled = false;
      const settle = (jpeg: Buffer | null, problem?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (problem) log.warn(`${name}: ${problem}`);
        resolve(jpeg);
      };
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        settle(null, `snapshot decoder took more than ${DECODE_TIMEOUT_MS} ms; killed`);
      }, DECODE_TIMEOUT_MS);
      child.stdout.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_JPEG_BYTES) return void child.kill('SIGKILL');
        out.push(chunk);
        // The picture is complete at its end-of-image marker. Waiting for the exit
        // instead would wait for good on the ~1 % of runs where gst-launch-1.0 hangs
        // in its shutdown after writing the whole picture (seen with GStreamer 1.22
        // on a busy machine).
        if (chunk[chunk.length - 1] !== 0xd9) return;
        const jpeg = wholeJpeg(out);
        if (!jpeg) return;
        settle(jpeg);
        child.kill('SIGKILL');
      });
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (text: string) => (stderr = (stderr + text).slice(-2000)));
      child.on('error', (error) => settle(null, `cannot run ${this.gstLaunch} for a snapshot: ${error.message}`));
      child.on('close', (code) => {
        const jpeg = code === 0 ? wholeJpeg(out) : null;
        const detail = stderr ? `: ${stderr.trim().split('\n').pop()}` : '';
        settle(jpeg, jpeg ? undefined : `snapshot decode failed (exit ${code}, ${size} bytes out)${detail}`);
      });
      child.stdin.on('error', () => {}); // a decoder that quits early closes its stdin
      child.stdin.end(webm);
    });
  }

  close(): void {
    this.closed = true;
    this.cache.clear();
  }
}
