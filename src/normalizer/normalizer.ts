import type { WebmBlock, WebmHeader } from '../webm/splitter.js';
import { buildInitSegment, sameTracks, type InitSegment } from './init-segment.js';
import { blockGroup, frameByte, madeBlock, rewriteBlock } from './block-writer.js';
import { opusPacketSamples, opusSilence } from './opus.js';

/** What the normalizer emits: one canonical live stream. */
export interface NormalizedStream {
  /** A new init segment: the first stream, or a producer whose tracks differ from the last one's. */
  init(init: InitSegment): void;
  /** A Cluster header (unknown size + Timecode). `keyframe`: it starts with a video keyframe, so a viewer can join here. */
  cluster(bytes: Buffer, timecode: number, keyframe: boolean): void;
  /** A block of the current cluster, its relative timecode rewritten. */
  block(parts: Buffer[], track: number, timecode: number, keyframe: boolean): void;
  /** Blocks went out outside an ingest read (a held frame let go by its timer): send them. */
  flush?(): void;
}

export interface NormalizerOptions {
  /** How far (in ms) blocks may be held back to put tracks in timestamp order. */
  reorderWindowMs: number;
  /** Cluster length for streams without video, in ms. */
  audioClusterMs: number;
  /**
   * Longest a video frame waits for the next one, in ms, of wall-clock time (a producer
   * that sends only video, at a variable frame rate) and of stream time (blocks of other
   * tracks wait behind it). Each frame is held until the next one arrives so that its
   * duration can reach it: this costs one frame interval of latency. A frame let go by
   * this bound lasts until the time the stream has reached.
   */
  maxFrameHoldMs: number;
  /** false: video frames go out as soon as the tracks are in order, without durations (a stream with holes wherever frames are missing; for comparison). */
  holdVideoFrames: boolean;
  /**
   * Longest hole in an Opus track that is filled with silence, in ms. A producer that
   * loses audio (a browser's MediaRecorder on a busy machine drops 50-150 ms now and then)
   * leaves a hole in `buffered` that playback stalls at. Only a hole whose blocks of other
   * tracks are still held can be filled (about `reorderWindowMs`); the bound keeps a
   * producer whose timestamps leap from making hours of silence.
   */
  maxSilenceFillMs: number;
}

export const DEFAULT_NORMALIZER_OPTIONS: NormalizerOptions = { reorderWindowMs: 500, audioClusterMs: 1000, maxFrameHoldMs: 1000, holdVideoFrames: true, maxSilenceFillMs: 1000 };

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
  /** Video frames let go before the next frame was known (hold bound, producer end): their duration is a guess. */
  guessedDurations: number;
  /** Holes in Opus tracks filled with silence, and the ms of silence written into them. */
  audioHolesFilled: number;
  silenceMs: number;
}

/** Relative block timecodes are signed 16-bit: a cluster can span at most this many ticks. */
const MAX_RELATIVE_TIMECODE = 0x7fff;

interface PendingBlock {
  block: WebmBlock;
  /** Output timestamp, in ticks. */
  time: number;
  /** performance.now() when it came in: bounds how long a video frame waits for the next. */
  arrived: number;
  /** The latest timestamp of any track when it came in: how far the stream has moved on since. */
  streamAtArrival: number;
}

/**
 * Turns whatever a producer sends into the stream every browser accepts: a Cluster at
 * every video keyframe (so every cluster is a join point), blocks in timestamp order
 * across tracks, timestamps that never go back, also across producer restarts.
 * Runs once per stream. Frame data is never copied: only the few bytes up to each
 * block's timecode are.
 */
export class Normalizer {
  readonly stats: NormalizerStats = { blocks: 0, clusters: 0, reordered: 0, clamped: 0, dropped: 0, seamlessRestarts: 0, guessedDurations: 0, audioHolesFilled: 0, silenceMs: 0 };
  private readonly options: NormalizerOptions;
  private current: InitSegment | null = null;
  private videoTracks = new Set<number>();
  /** Opus and Vorbis tracks: every frame is a keyframe, whatever the producer's flags say. */
  private keyframeAudioTracks = new Set<number>();
  /**
   * Opus tracks whose init segment gives no DefaultDuration: each frame goes out with its
   * own duration (see `opusBlock`).
   */
  private opusDurationTracks = new Set<number>();
  /** Opus tracks, and whether each is stereo (its silence says so). */
  private opusTracks = new Map<number, boolean>();
  /** Where the current producer's latest frame of each Opus track ends, in output ticks. */
  private audioEndByTrack = new Map<number, number>();
  private holdTimer: NodeJS.Timeout | null = null;
  /** The video frame the hold timer is for. */
  private heldFrame: PendingBlock | null = null;
  /** Latest timestamp fed in, of any track. */
  private newestInput = -Infinity;
  private ticksPerMs = 1;

  /** Added to a producer's timestamps; fixed by the first block after each new header. */
  private offset = 0;
  private needOffset = true;
  /**
   * Set from a producer's first block until its first video frame: the offset placed its
   * first block (often audio) one frame after the last, and the video that follows may
   * have been timed before that block by its encoder.
   */
  private checkVideoSeam = false;
  private pending: PendingBlock[] = [];
  /** Latest input timestamp per track: a block may leave the window once every track has passed it. */
  private latestByTrack = new Map<number, number>();

  private lastTime = -1;
  private readonly lastTimeByTrack = new Map<number, number>();
  private lastVideoTime = -1;
  /** The latest spacings of video frames, newest last: a restarted producer continues on their grid. */
  private readonly frameSpacings: number[] = [];
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
      this.keyframeAudioTracks = new Set(
        next.info.tracks.filter((t) => t.kind === 'audio' && (t.codecId === 'A_OPUS' || t.codecId === 'A_VORBIS')).map((t) => t.number),
      );
      this.opusDurationTracks = new Set(
        next.info.tracks.filter((t) => t.kind === 'audio' && t.codecId === 'A_OPUS' && !t.defaultDuration).map((t) => t.number),
      );
      this.opusTracks = new Map(next.info.tracks.filter((t) => t.kind === 'audio' && t.codecId === 'A_OPUS').map((t) => [t.number, (t.channels ?? 1) > 1]));
      this.ticksPerMs = 1_000_000 / next.info.timecodeScale;
      this.out.init(next);
    }
    this.needOffset = true;
    this.checkVideoSeam = this.lastVideoTime >= 0 && this.videoTracks.size > 0;
    this.waitForKeyframe = true;
    this.clusterTime = -1;
    this.latestByTrack.clear();
    this.audioEndByTrack.clear();
    this.newestInput = -Infinity;
  }

  block(block: WebmBlock): void {
    if (!this.current) return;
    if (this.needOffset) {
      // Continue where the previous producer stopped, one frame later.
      this.offset = this.lastTime < 0 ? 0 : this.lastTime + Math.round(this.frameInterval()) - block.timecode;
      this.needOffset = false;
    }
    let time = block.timecode + this.offset;
    if (this.checkVideoSeam && this.videoTracks.has(block.track)) {
      // Its first video frame goes a whole number of frames after the last one, at least
      // one. A player that counts frames at the stream's rate (ffmpeg) rounds timestamps
      // to its grid: closer than a frame, it finds two on one timestamp; half a frame off
      // the grid (audio placed the producer, its video came later), two frames of the new
      // producer 33 ms apart can round to one.
      // The producer's blocks so far move with it, keeping their distance to it.
      const interval = this.frameInterval();
      // A frame within a tenth of an interval past a grid point is on it: it stays.
      const frames = Math.max(1, Math.ceil((time - this.lastVideoTime) / interval - 0.1));
      const shift = Math.round(this.lastVideoTime + frames * interval) - time;
      if (shift > 0) {
        this.shiftProducer(shift);
        time += shift;
      }
      this.checkVideoSeam = false;
    }
    const stereo = this.opusTracks.get(block.track);
    if (stereo !== undefined) this.fillAudioHole(block, time, stereo);
    if (this.insert(block, time)) this.stats.reordered++;
    this.latestByTrack.set(block.track, Math.max(time, this.latestByTrack.get(block.track) ?? -Infinity));
    this.release();
  }

  /** Puts a block among the pending ones in timestamp order; true when it went before some. */
  private insert(block: WebmBlock, time: number): boolean {
    const pending = this.pending;
    let at = pending.length;
    while (at > 0 && pending[at - 1].time > time) at--;
    this.newestInput = Math.max(this.newestInput, time);
    pending.splice(at, 0, { block, time, arrived: performance.now(), streamAtArrival: this.newestInput });
    return at < pending.length - 1;
  }

  /**
   * An Opus frame that starts after the end of its track's last one: the hole between
   * them is filled with silent frames, which wait among the pending blocks like any, when
   * nothing later than the hole's start has gone out yet (the silence would otherwise be
   * moved after it, and the hole stay where it is).
   */
  private fillAudioHole(block: WebmBlock, time: number, stereo: boolean): void {
    const samples = opusSamplesOf(block);
    const end = this.audioEndByTrack.get(block.track);
    if (samples === null) {
      this.audioEndByTrack.delete(block.track);
      return;
    }
    const ticksPerSample = this.ticksPerMs / 48;
    if (end !== undefined && end >= this.lastTime) {
      const hole = time - end;
      // A hole of less than half a frame is jitter in the producer's timestamps, which
      // every MSE bridges; a few ms of silence inside a tone would be heard as a click.
      if (hole > (samples / 2) * ticksPerSample && hole <= this.options.maxSilenceFillMs * this.ticksPerMs) {
        const silence = opusSilence(Math.floor(hole / ticksPerSample), stereo);
        let at = end;
        for (const frame of silence) {
          this.insert(madeBlock(block.track, Math.round(at) - this.offset, frame.packet), Math.round(at));
          at += frame.samples * ticksPerSample;
        }
        if (silence.length > 0) {
          this.stats.audioHolesFilled++;
          this.stats.silenceMs += Math.round((at - end) / this.ticksPerMs);
        }
      }
    }
    this.audioEndByTrack.set(block.track, Math.max(end ?? -Infinity, time + samples * ticksPerSample));
  }

  /** The latest spacing of video frames, 0 before there is one. */
  private get frameTicks(): number {
    return this.frameSpacings.at(-1) ?? 0;
  }

  /** The latest spacing of video frames, or 20 ms before there is one. */
  private frameStep(): number {
    return Math.max(1, Math.round(this.frameTicks || 20 * this.ticksPerMs));
  }

  /**
   * The frame interval, from the latest spacings: each counts as the whole number of
   * frames it spans, in units of the shortest spacing that is no jitter (at least 0.4 of
   * the median), and their sum is divided by those frames. An encoder on a busy machine
   * drops frames (spacings of 67 and 100 ms at 30 frames a second), and one spacing is a
   * whole number of ticks (33 or 34 ms): an average of single spacings would be off the
   * rate's grid.
   */
  private frameInterval(): number {
    if (this.frameSpacings.length < 5) return this.frameStep();
    const sorted = [...this.frameSpacings].sort((a, b) => a - b);
    const median = sorted[sorted.length >> 1];
    const unit = sorted.find((spacing) => spacing >= 0.4 * median) ?? median;
    let ticks = 0;
    let frames = 0;
    for (const spacing of sorted) {
      ticks += spacing;
      frames += Math.max(1, Math.round(spacing / unit));
    }
    return ticks / frames;
  }

  /** Moves the current producer's timeline later. Everything pending came from it: its header flushed the rest. */
  private shiftProducer(ticks: number): void {
    this.offset += ticks;
    for (const p of this.pending) {
      p.time += ticks;
      p.streamAtArrival += ticks;
    }
    for (const [track, t] of this.latestByTrack) this.latestByTrack.set(track, t + ticks);
    for (const [track, t] of this.audioEndByTrack) this.audioEndByTrack.set(track, t + ticks);
    this.newestInput += ticks;
  }

  /** Lets every held block go: the producer has ended, or a new one begins. */
  flush(): void {
    this.stopHoldTimer();
    const pending = this.pending;
    for (let i = 0; i < pending.length; i++) this.emit(pending[i], this.options.holdVideoFrames ? this.durationOf(pending, i, true) : undefined);
    this.pending = [];
    this.latestByTrack.clear();
  }

  /**
   * Lets out the blocks that are in order: every track has passed them, or they are older
   * than the reorder window. A video frame also waits for the next frame of its track
   * (its duration must reach it), at most `maxFrameHoldMs`; blocks behind it wait too,
   * so that the output stays in timestamp order.
   */
  private release(wallNow = performance.now()): number {
    let safe = Infinity;
    for (const t of this.latestByTrack.values()) safe = Math.min(safe, t);
    const pending = this.pending;
    if (pending.length === 0) {
      this.stopHoldTimer();
      return 0;
    }
    const newest = pending[pending.length - 1].time;
    const horizon = newest - this.options.reorderWindowMs * this.ticksPerMs;
    const holdHorizon = newest - this.options.maxFrameHoldMs * this.ticksPerMs;
    let n = 0;
    while (n < pending.length && (pending[n].time <= safe || pending[n].time < horizon)) {
      const p = pending[n];
      let duration: number | undefined;
      if (this.options.holdVideoFrames && this.videoTracks.has(p.block.track)) {
        // (A timer may fire a little before performance.now() says it is due.)
        const overdue = p.time < holdHorizon || wallNow - p.arrived >= this.options.maxFrameHoldMs - 2;
        duration = this.durationOf(pending, n, overdue);
        if (duration === undefined && !overdue) break;
      }
      this.emit(p, duration);
      n++;
    }
    if (n > 0) pending.splice(0, n);
    const held = pending[0];
    if (held && this.options.holdVideoFrames && this.videoTracks.has(held.block.track)) {
      // The same frame still held keeps its timer: every audio block arriving meanwhile
      // would otherwise cancel and set one, for every stream.
      if (this.holdTimer && this.heldFrame === held) return n;
      this.stopHoldTimer();
      this.heldFrame = held;
      // Whole milliseconds: Node keeps a timer list per distinct duration.
      const wait = Math.max(1, Math.ceil(held.arrived + this.options.maxFrameHoldMs - wallNow));
      this.holdTimer = setTimeout(() => {
        this.holdTimer = null;
        this.heldFrame = null;
        if (this.release() > 0) this.out.flush?.();
      }, wait);
      this.holdTimer.unref();
    } else {
      this.stopHoldTimer();
    }
    return n;
  }

  /**
   * Duration in ticks of the pending video frame at `index`: up to the next frame of its
   * track, when that is known. Otherwise, when `guess`, how long the track has been
   * silent since this frame came in, in stream time (other tracks went on) or wall-clock
   * time (nothing came), and at least the last frame spacing; else undefined. A video
   * track that lags its audio arrives "old" but has not been silent: it gets one spacing.
   */
  private durationOf(pending: PendingBlock[], index: number, guess: boolean): number | undefined {
    const p = pending[index];
    if (!this.videoTracks.has(p.block.track)) return undefined;
    // Where the next frame of the track will go out: the blocks before it may move it forward.
    const start = this.outputTime(p);
    let last = start;
    const lastByTrack = new Map([[p.block.track, start]]);
    for (let i = index + 1; i < pending.length; i++) {
      const { block, time } = pending[i];
      const out = Math.max(time, last, (lastByTrack.get(block.track) ?? this.lastTimeByTrack.get(block.track) ?? -1) + 1);
      if (block.track === p.block.track) return Math.max(1, out - start);
      last = out;
      lastByTrack.set(block.track, out);
    }
    if (!guess) return undefined;
    this.stats.guessedDurations++;
    const silentStream = this.newestInput - Math.max(p.time, p.streamAtArrival);
    const silentWall = (performance.now() - p.arrived) * this.ticksPerMs;
    return Math.max(1, Math.round(Math.max(this.frameTicks || 33 * this.ticksPerMs, silentStream, silentWall)));
  }

  /** The timestamp `emit` will give a block: never before a block already sent. */
  private outputTime({ block, time }: PendingBlock): number {
    return Math.max(time, this.lastTime, 0, (this.lastTimeByTrack.get(block.track) ?? -1) + 1);
  }

  private stopHoldTimer(): void {
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = null;
    this.heldFrame = null;
  }

  private emit(pendingBlock: PendingBlock, duration?: number): void {
    const { block, time: wanted } = pendingBlock;
    // Never before zero (the first producer's first blocks may be: lastTime starts at -1),
    // never before a block already sent, and after the track's last block: a track whose
    // blocks come more than the reorder window behind the others (a video encoder
    // lagging its audio) is moved forward frame by frame, not piled on one timestamp.
    const time = this.outputTime(pendingBlock);
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
    const previousVideoTime = this.lastVideoTime;
    this.lastTime = time;
    this.lastTimeByTrack.set(block.track, time);
    if (isVideo) {
      if (time > this.lastVideoTime && this.lastVideoTime >= 0) {
        this.frameSpacings.push(time - this.lastVideoTime);
        if (this.frameSpacings.length > 9) this.frameSpacings.shift();
      }
      this.lastVideoTime = time;
    }
    this.stats.blocks++;
    const relative = time - this.clusterTime;
    const audioKeyframe = this.keyframeAudioTracks.has(block.track);
    const parts =
      isVideo && duration !== undefined
        ? blockGroup(block, relative, duration, block.keyframe ? null : Math.max(1, time - previousVideoTime))
        : this.opusDurationTracks.has(block.track)
          ? this.opusBlock(block, relative)
          : rewriteBlock(block, relative, audioKeyframe);
    this.out.block(parts, block.track, time, block.keyframe || audioKeyframe);
  }

  /**
   * An Opus frame as a BlockGroup whose BlockDuration is the packet's own length. A browser
   * that has no next frame yet must otherwise guess how long the last one lasts, and
   * Firefox guesses wrong: when a cluster starts before the end of the audio frame before
   * it (an audio frame spans every keyframe that does not fall on an audio frame boundary),
   * its MSE makes a new demuxer, and that demuxer's first audio frame, when no later one has
   * arrived, is given the end of the last video frame as its end: a duration of zero. The
   * next audio frame is then more than twice that after it, a discontinuity, and every
   * track drops what follows up to its next keyframe (a hole of a whole GOP in `buffered`).
   * With a BlockDuration, or a DefaultDuration in the init segment (GStreamer writes one),
   * Firefox takes the frame's length from there. A packet that is not valid Opus, or a
   * laced or grouped block, goes out as it came.
   */
  private opusBlock(block: WebmBlock, relative: number): Buffer[] {
    const samples = opusSamplesOf(block);
    if (samples === null) return rewriteBlock(block, relative, true);
    return blockGroup(block, relative, (samples / 48) * this.ticksPerMs, null);
  }

  private startCluster(time: number, keyframe: boolean): void {
    this.clusterTime = time;
    this.stats.clusters++;
    this.out.cluster(clusterHeader(time), time, keyframe);
  }
}

/** Samples at 48 kHz of the Opus packet a block carries; null for a laced or grouped block, or one that is not valid Opus. */
function opusSamplesOf(block: WebmBlock): number | null {
  const toc = block.kind === 'simple' && block.lacing === 'none' ? frameByte(block, 0) : undefined;
  return toc === undefined ? null : opusPacketSamples(toc, frameByte(block, 1));
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
