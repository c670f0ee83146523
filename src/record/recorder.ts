import { promises as fsp } from 'node:fs';
import fs from 'node:fs';
import path from 'node:path';
import type { RecordConfig } from '../config/options.js';
import { logger } from '../log.js';
import type { CloseReason, RecordingStats } from '../protocol.js';
import type { BlockEvent, ClusterEvent, StreamSink, VersionedInit } from '../stream/events.js';
import { clusterElement, startRecording } from '../webm/writer.js';
import { RecordingFileWriter, describe, frameGuess } from './file-writer.js';
import { finishUnfinished } from './recovery.js';

const log = logger('record');

export interface RecorderOptions extends RecordConfig {
  /** Bytes waiting for the disk beyond which the file ends ("the disk is too slow"). */
  maxQueueBytes: number;
  /** After a failure, a new file is tried at a keyframe at most this often. */
  retryMs: number;
  /** How often retention runs besides after every file. */
  housekeepingMs: number;
}

export const DEFAULT_RECORDER_LIMITS = { maxQueueBytes: 32 << 20, retryMs: 2000, housekeepingMs: 60_000 };

/** `2026-11-29T10-00-00Z.webm`, and `...Z-2.webm` for a second file started within the same second. */
export const RECORDING_FILE = /^(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ)(?:-(\d{1,4}))?\.webm$/;

export function recordingFileName(startMs: number, n = 1): string {
  const stamp = new Date(startMs).toISOString().replace(/\.\d{3}Z$/, 'Z').replace(/:/g, '-');
  return n > 1 ? `${stamp}-${n}.webm` : `${stamp}.webm`;
}

/** Recording names in the order they were started. */
export function compareRecordingNames(a: string, b: string): number {
  const ma = RECORDING_FILE.exec(a);
  const mb = RECORDING_FILE.exec(b);
  if (!ma || !mb) return a.localeCompare(b);
  return ma[1].localeCompare(mb[1]) || Number(ma[2] ?? 1) - Number(mb[2] ?? 1);
}

interface OpenFile {
  name: string;
  writer: RecordingFileWriter;
  /** Stream timecode of its first cluster: the file's time 0. */
  startTicks: number;
  startMs: number;
  /** Latest block timecode, in the file's ticks. */
  lastTicks: number;
  lastVideoTicks: number;
  frameTicks: number;
}

interface GatheredCluster {
  timecode: number;
  keyframe: boolean;
  parts: Buffer[];
  bytes: number;
  lastTicks: number;
}

/** What playback needs of the file being written. */
export interface CurrentRecording {
  name: string;
  startMs: number;
  /** Bytes of whole clusters on disk. */
  bytes: number;
  durationS: number;
  writer: RecordingFileWriter;
}

/**
 * The recorder sink: writes the stream into `DIR/<name>/<UTC start>.webm`, a new file at
 * the first keyframe cluster after `segmentS` and at every new init segment. Clusters are
 * gathered from the events (references to the shared Buffers, no copies) and handed
 * whole to a file writer that works off the fan-out path. When the disk fails or falls
 * behind, the file ends at its last whole cluster, this is logged once, and recording
 * starts again at a keyframe once a file can be written again.
 */
export class Recorder implements StreamSink {
  readonly options: RecorderOptions;
  private ready = false;
  private init: VersionedInit | null = null;
  private ticksPerSecond = 1000;
  private file: OpenFile | null = null;
  private cluster: GatheredCluster | null = null;
  private failing: { since: number; why: string } | null = null;
  private nextAttempt = 0;
  private readonly closing = new Map<string, Promise<boolean>>();
  private housekeepingChain: Promise<void> = Promise.resolve();
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  readonly counts = { files: 0, failures: 0, deleted: 0, recovered: 0 };

  constructor(
    readonly streamName: string,
    options: RecordConfig & Partial<RecorderOptions>,
  ) {
    this.options = { ...DEFAULT_RECORDER_LIMITS, ...options };
    this.timer = setInterval(() => this.housekeeping(), this.options.housekeepingMs).unref();
    // Files a crash left unfinished are finished before anything new is written.
    this.housekeeping(true).then(() => (this.ready = true));
  }

  get dir(): string {
    return this.options.dir;
  }

  /** The file being written now, or null. */
  current(): CurrentRecording | null {
    const file = this.file;
    if (!file) return null;
    return {
      name: file.name,
      startMs: file.startMs,
      bytes: file.writer.bytesOnDisk,
      durationS: (file.lastTicks + file.frameTicks) / this.ticksPerSecond,
      writer: file.writer,
    };
  }

  stats(): RecordingStats {
    const file = this.file;
    return {
      dir: this.dir,
      file: file?.name ?? null,
      bytes: file?.writer.bytesOnDisk ?? 0,
      queuedBytes: file?.writer.pendingBytes ?? 0,
      failing: this.failing?.why ?? null,
      ...this.counts,
    };
  }

  /** Names of files still being written or finished: not to be touched by retention or recovery. */
  private busyNames(): Set<string> {
    const busy = new Set(this.closing.keys());
    if (this.file) busy.add(this.file.name);
    return busy;
  }

  // --- StreamSink -----------------------------------------------------------------------

  initChanged(init: VersionedInit): void {
    this.endCluster();
    if (this.file) this.endFile(null, 'the tracks changed');
    this.init = init;
    this.ticksPerSecond = 1e9 / init.segment.info.timecodeScale;
  }

  clusterStarted(cluster: ClusterEvent): void {
    this.endCluster();
    if (cluster.keyframe) {
      const file = this.file;
      if (file && cluster.timecode - file.startTicks >= this.options.segmentS * this.ticksPerSecond) {
        this.endFile(cluster.timecode - file.startTicks, 'segment length reached');
      }
      if (!this.file) this.open(cluster.timecode, cluster.wallMs);
    }
    const file = this.file;
    if (!file) return;
    const timecode = cluster.timecode - file.startTicks;
    this.cluster = { timecode, keyframe: cluster.keyframe, parts: [], bytes: 0, lastTicks: timecode };
  }

  block(block: BlockEvent): void {
    const cluster = this.cluster;
    const file = this.file;
    if (!cluster || !file) return;
    for (const part of block.parts) {
      cluster.parts.push(part);
      cluster.bytes += part.length;
    }
    const ticks = block.timecode - file.startTicks;
    if (ticks > cluster.lastTicks) cluster.lastTicks = ticks;
    if (ticks > file.lastTicks) file.lastTicks = ticks;
    if (block.video) {
      if (file.lastVideoTicks >= 0 && ticks > file.lastVideoTicks) file.frameTicks = ticks - file.lastVideoTicks;
      file.lastVideoTicks = ticks;
    }
    // A producer that sends no keyframe for a long time: the cluster would grow without bound.
    if (cluster.bytes > this.options.maxQueueBytes) {
      this.cluster = null;
      file.writer.abort(`a cluster of more than ${this.options.maxQueueBytes} bytes (no keyframe for a long time)`);
    }
  }

  flush(): void {}

  producerStarted(): void {}

  producerEnded(): void {
    this.endCluster();
    if (this.file) this.endFile(null, 'the producer ended');
  }

  close(reason: CloseReason): void {
    this.endCluster();
    if (this.file) this.endFile(null, `relay ${reason}`);
    this.closed = true;
    clearInterval(this.timer);
  }

  /** Resolves once every file has been finished and closed (relay shutdown). */
  async settled(): Promise<void> {
    await Promise.all([...this.closing.values()]);
  }

  // --- Files ----------------------------------------------------------------------------

  /** A file from the keyframe cluster at `streamTicks`, which happened at `startMs`. */
  private open(streamTicks: number, startMs: number): void {
    if (!this.ready || !this.init || this.closed) return;
    if (this.failing && Date.now() < this.nextAttempt) return;
    let n = 1;
    let name = recordingFileName(startMs);
    while (n < 100 && (this.closing.has(name) || fs.existsSync(path.join(this.dir, name)))) name = recordingFileName(startMs, ++n);
    const { head, layout } = startRecording(this.init.segment.bytes, startMs);
    const writer = new RecordingFileWriter(path.join(this.dir, name), layout, head, this.options.maxQueueBytes, {
      failed: (w, why) => this.writerFailed(w, why),
      caughtUp: (w) => this.writerWorks(w),
    });
    this.file = { name, writer, startTicks: streamTicks, startMs, lastTicks: 0, lastVideoTicks: -1, frameTicks: frameGuess(layout) };
    this.counts.files++;
    log.info(`${this.streamName}: recording into ${writer.file}`);
  }

  private endCluster(): void {
    const cluster = this.cluster;
    this.cluster = null;
    if (!cluster || !this.file) return;
    this.file.writer.append(clusterElement(cluster.timecode, cluster.parts), cluster.timecode, cluster.keyframe, cluster.lastTicks);
  }

  private endFile(durationTicks: number | null, why: string): void {
    const file = this.file!;
    this.file = null;
    this.cluster = null;
    const duration = durationTicks ?? file.lastTicks + file.frameTicks;
    const closing = file.writer.finish(duration);
    this.closing.set(file.name, closing);
    void closing.then((finished) => {
      this.closing.delete(file.name);
      if (finished) log.info(`${this.streamName}: recording ${file.name} finished (${why}): ${(duration / this.ticksPerSecond).toFixed(1)} s, ${file.writer.bytesOnDisk} bytes`);
      else if (!file.writer.failed) log.warn(`${this.streamName}: recording ${file.name} could not be finished; it is finished on the next start`);
      this.housekeeping();
    });
  }

  private writerFailed(writer: RecordingFileWriter, why: string): void {
    this.counts.failures++;
    this.nextAttempt = Date.now() + this.options.retryMs;
    if (this.file?.writer === writer) {
      // The writer finishes what reached the disk; the stream goes on without a file until a keyframe.
      this.closing.set(this.file.name, writer.closed);
      const name = this.file.name;
      void writer.closed.then((finished) => {
        this.closing.delete(name);
        if (finished) log.info(`${this.streamName}: recording ${name} ended at its last whole cluster (${writer.bytesOnDisk} bytes)`);
      });
      this.file = null;
      this.cluster = null;
    }
    if (this.failing) {
      log.debug(`${this.streamName}: recording still failing: ${why}`);
      return;
    }
    this.failing = { since: Date.now(), why };
    log.warn(`${this.streamName}: recording stopped: ${why}. Viewers are not affected; recording starts again at a keyframe once a file can be written`);
  }

  private writerWorks(writer: RecordingFileWriter): void {
    if (!this.failing) return;
    const gap = ((Date.now() - this.failing.since) / 1000).toFixed(1);
    this.failing = null;
    log.info(`${this.streamName}: recording resumed into ${writer.file} after a gap of ${gap} s`);
    this.housekeeping(true);
  }

  // --- Recovery and retention ---------------------------------------------------------

  /** Runs recovery (when asked) and retention, one run at a time. */
  private housekeeping(recover = false): Promise<void> {
    this.housekeepingChain = this.housekeepingChain.then(async () => {
      try {
        if (recover) await this.recoverUnfinished();
        await this.applyRetention();
      } catch (error) {
        log.warn(`${this.streamName}: recordings in ${this.dir}: ${describe(error as NodeJS.ErrnoException)}`);
      }
    });
    return this.housekeepingChain;
  }

  private async listFiles(): Promise<{ name: string; size: number; mtimeMs: number }[]> {
    let names: string[];
    try {
      names = await fsp.readdir(this.dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
    const files = [];
    for (const name of names.filter((n) => RECORDING_FILE.test(n)).sort(compareRecordingNames)) {
      const stat = await fsp.stat(path.join(this.dir, name)).catch(() => null);
      if (stat?.isFile()) files.push({ name, size: stat.size, mtimeMs: stat.mtimeMs });
    }
    return files;
  }

  private async recoverUnfinished(): Promise<void> {
    for (const { name } of await this.listFiles()) {
      if (this.busyNames().has(name)) continue;
      const file = path.join(this.dir, name);
      try {
        const result = await finishUnfinished(file);
        if (result.kind === 'finished') {
          this.counts.recovered++;
          log.info(
            `${this.streamName}: finished the unfinished recording ${name}: ${result.clusters} clusters, ${result.durationS.toFixed(1)} s, ${result.bytes} bytes` +
              (result.cutBytes > 0 ? ` (${result.cutBytes} bytes of an incomplete cluster cut off)` : ''),
          );
        } else if (result.kind === 'removed') log.info(`${this.streamName}: removed the unfinished recording ${name}: not one whole cluster in it`);
      } catch (error) {
        log.warn(`${this.streamName}: cannot finish the unfinished recording ${name}: ${describe(error as NodeJS.ErrnoException)}`);
      }
    }
  }

  private async applyRetention(): Promise<void> {
    const { keepS, maxBytes } = this.options;
    if (keepS === null && maxBytes === null) return;
    const files = await this.listFiles();
    const busy = this.busyNames();
    let total = files.reduce((n, f) => n + f.size, 0);
    const now = Date.now();
    for (const f of files) {
      if (busy.has(f.name)) continue;
      const old = keepS !== null && now - f.mtimeMs > keepS * 1000;
      const over = maxBytes !== null && total > maxBytes;
      if (!old && !over) continue;
      await fsp.unlink(path.join(this.dir, f.name));
      total -= f.size;
      this.counts.deleted++;
      log.info(
        `${this.streamName}: deleted recording ${f.name} (${f.size} bytes, ended ${((now - f.mtimeMs) / 1000).toFixed(0)} s ago): ` +
          (old ? `older than record-keep (${keepS} s)` : `recordings over record-max-bytes (${maxBytes} bytes)`),
      );
    }
  }
}
