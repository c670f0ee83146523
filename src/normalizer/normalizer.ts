import type { WebmBlock, WebmHeader } from '../webm/splitter.js';
import { buildInitSegment, sameTracks, type InitSegment } from './init-segment.js';

/** What the normalizer emits: one canonical live stream. */
export interface NormalizedStream {
  /** A new init segment: the first stream, or a producer whose tracks differ from the last one's. */
  init(init: InitSegment): void;
  /** A Cluster header (unknown size + Timecode). `keyframe`: it starts with a video keyframe, so a viewer can join here. */
  cluster(bytes: Buffer, timecode: number, keyframe: boolean): void;
  /** A block of the current cluster, its relative timecode rewritten. */
  block(parts: Buffer[], track: number, timecode: number, keyframe: boolean): void;
}

export interface NormalizerOptions {
  /** How far (in ms) blocks may be held back to put tracks in timestamp order. */
  reorderWindowMs: number;
  /** Cluster length for streams without video, in ms. */
  audioClusterMs: number;
}

export const DEFAULT_NORMALIZER_OPTIONS: NormalizerOptions = { reorderWindowMs: 500, audioClusterMs: 1000 };

export interface NormalizerStats {
  blocks: number;
  clusters: number;
  /** Blocks that arrived earlier than an already-received block of another track, and were put back in order. */
  reordered: number;
  /** Blocks whose timestamp was moved forward so the stream never goes back in time. */
  clamped: number;
  /** Blocks dropped while waiting for a video keyframe (stream start, producer restart). */
  dropped: number;
  /** Producers whose header matched the running stream, continued without a new init segment. */
  seamlessRestarts: number;
}

/** Relative block timecodes are signed 16-bit: a cluster can span at most this many ticks. */
const MAX_RELATIVE_TIMECODE = 0x7fff;

interface PendingBlock {
  block: WebmBlock;
  /** Output timestamp, in ticks. */
  time: number;
}

/**
 * Turns whatever a producer sends into the stream every browser accepts: a Cluster at
 * every video keyframe (so every cluster is a join point), blocks in timestamp order
 * across tracks, timestamps that never go back, also across producer restarts.
 * Runs once per stream. Frame data is never copied: only the few bytes up to each
 * block's timecode are.
 */
export class Normalizer {
  readonly stats: NormalizerStats = { blocks: 0, clusters: 0, reordered: 0, clamped: 0, dropped: 0, seamlessRestarts: 0 };
  private readonly options: NormalizerOptions;
  private current: InitSegment | null = null;
  private videoTracks = new Set<number>();
  private ticksPerMs = 1;

  /** Added to a producer's timestamps; fixed by the first block after each new header. */
  private offset = 0;
  private needOffset = true;
  private pending: PendingBlock[] = [];
  /** Latest input timestamp per track: a block may leave the window once every track has passed it. */
  private latestByTrack = new Map<number, number>();

  private lastTime = -1;
  private readonly lastTimeByTrack = new Map<number, number>();
  private lastVideoTime = -1;
  /** Latest spacing of video frames: a restarted producer continues one frame after the last. */
  private frameTicks = 0;
  private clusterTime = -1;
  /** Set when a stream (re)starts: nothing goes out before the next video keyframe. */
  private waitForKeyframe = true;

  constructor(
    private readonly out: NormalizedStream,
    options: Partial<NormalizerOptions> = {},
  ) {
    this.options = { ...DEFAULT_NORMALIZER_OPTIONS, ...options };
  }

  header(header: WebmHeader): void {
    this.flush();
    const next = buildInitSegment(header);
    if (this.current && sameTracks(this.current.info, next.info)) {
      this.stats.seamlessRestarts++;
    } else {
      this.current = next;
      this.videoTracks = new Set(next.info.tracks.filter((t) => t.kind === 'video').map((t) => t.number));
      this.ticksPerMs = 1_000_000 / next.info.timecodeScale;
      this.out.init(next);
    }
    this.needOffset = true;
    this.waitForKeyframe = true;
    this.clusterTime = -1;
    this.latestByTrack.clear();
  }

  block(block: WebmBlock): void {
    if (!this.current) return;
    if (this.needOffset) {
      // Continue where the previous producer stopped, one frame later.
      const step = Math.max(1, Math.round(this.frameTicks || 20 * this.ticksPerMs));
      this.offset = this.lastTime < 0 ? 0 : this.lastTime + step - block.timecode;
      this.needOffset = false;
    }
    const time = block.timecode + this.offset;
    const pending = this.pending;
    let at = pending.length;
    while (at > 0 && pending[at - 1].time > time) at--;
    if (at < pending.length) this.stats.reordered++;
    pending.splice(at, 0, { block, time });
    this.latestByTrack.set(block.track, Math.max(time, this.latestByTrack.get(block.track) ?? -Infinity));
    this.release();
  }

  /** Lets every held block go: the producer has ended, or a new one begins. */
  flush(): void {
    for (const p of this.pending) this.emit(p);
    this.pending = [];
    this.latestByTrack.clear();
  }

  private release(): void {
    let safe = Infinity;
    for (const t of this.latestByTrack.values()) safe = Math.min(safe, t);
    const pending = this.pending;
    const newest = pending[pending.length - 1].time;
    const horizon = newest - this.options.reorderWindowMs * this.ticksPerMs;
    let n = 0;
    while (n < pending.length && (pending[n].time <= safe || pending[n].time < horizon)) this.emit(pending[n++]);
    if (n > 0) pending.splice(0, n);
  }

  private emit({ block, time: wanted }: PendingBlock): void {
    // Never before zero (the first producer's first blocks may be: lastTime starts at -1),
    // never before a block already sent, and after the track's last block: a track whose
    // blocks come more than the reorder window behind the others (a video encoder
    // lagging its audio) is moved forward frame by frame, not piled on one timestamp.
    const previous = this.lastTimeByTrack.get(block.track) ?? -1;
    const time = Math.max(wanted, this.lastTime, 0, previous + 1);
    if (time !== wanted) this.stats.clamped++;
    // A Cluster Timecode is an unsigned 64-bit integer; past 2^53 a number is not exact. Such a block is bad data.
    if (time > Number.MAX_SAFE_INTEGER) {
      this.stats.dropped++;
      return;
    }
    const isVideo = this.videoTracks.has(block.track);
    const hasVideo = this.videoTracks.size > 0;
    if (hasVideo ? isVideo && block.keyframe : this.clusterTime < 0 || time - this.clusterTime >= this.options.audioClusterMs * this.ticksPerMs) {
      this.startCluster(time, true);
      this.waitForKeyframe = false;
    } else if (this.waitForKeyframe) {
      this.stats.dropped++;
      return;
    } else if (time - this.clusterTime > MAX_RELATIVE_TIMECODE) {
      this.startCluster(time, false);
    }
    this.lastTime = time;
    this.lastTimeByTrack.set(block.track, time);
    if (isVideo) {
      if (time > this.lastVideoTime && this.lastVideoTime >= 0) this.frameTicks = time - this.lastVideoTime;
      this.lastVideoTime = time;
    }
    this.stats.blocks++;
    this.out.block(rewriteTimecode(block, time - this.clusterTime), block.track, time, block.keyframe);
  }

  private startCluster(time: number, keyframe: boolean): void {
    this.clusterTime = time;
    this.stats.clusters++;
    this.out.cluster(clusterHeader(time), time, keyframe);
  }
}

/** Cluster ID, unknown size, then the Timecode element. */
export function clusterHeader(timecode: number): Buffer {
  const out = Buffer.alloc(12 + 2 + 8);
  out.writeUInt32BE(0x1f43b675, 0);
  out[4] = 0x01;
  out.fill(0xff, 5, 12);
  out[12] = 0xe7;
  out[13] = 0x88;
  out.writeBigUInt64BE(BigInt(timecode), 14);
  return out;
}

/** The block's parts with a fresh copy of the bytes up to and including its 16-bit relative timecode. */
function rewriteTimecode(block: WebmBlock, relative: number): Buffer[] {
  const headLength = block.timecodeOffset + 2;
  const head = Buffer.allocUnsafe(headLength);
  const parts: Buffer[] = [head];
  let filled = 0;
  for (const part of block.parts) {
    if (filled >= headLength) {
      parts.push(part);
      continue;
    }
    const take = Math.min(part.length, headLength - filled);
    part.copy(head, filled, 0, take);
    filled += take;
    if (take < part.length) parts.push(part.subarray(take));
  }
  head.writeInt16BE(relative, block.timecodeOffset);
  return parts;
}
