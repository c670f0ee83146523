import fs from 'node:fs';
import path from 'node:path';
import { finishRecording, type CueEntry, type RecordingLayout } from '../webm/writer.js';

/** One cluster on its way to the disk. */
interface QueuedCluster {
  parts: Buffer[];
  bytes: number;
  /** Cluster timecode in the file's ticks. */
  timecode: number;
  keyframe: boolean;
  /** The latest block timecode in it, in the file's ticks. */
  lastTicks: number;
}

export interface FileWriterEvents {
  /** The first write failed or a later one did (ENOSPC, EACCES, EIO) or the queue overflowed: the file ends here. */
  failed(writer: RecordingFileWriter, why: string): void;
  /**
   * The disk keeps up: two keyframe clusters are on disk and nothing waits to be written,
   * or the file was finished whole. Said once. One cluster is not enough: a disk too
   * slow for the stream writes one too, and a full one has room for one in what cutting
   * the failed file's last partial cluster gave back.
   */
  caughtUp(writer: RecordingFileWriter): void;
}

/**
 * Writes one recording off the stream's fan-out path: clusters are queued (bounded in
 * bytes) and written one batch at a time with positional `writev`, so the event
 * callbacks never wait for the disk. On any failure it stops writing at the last
 * cluster that reached the disk whole, and finishes the file there when asked to.
 */
export class RecordingFileWriter {
  private fd: number | null = null;
  private readonly queue: QueuedCluster[] = [];
  private queuedBytes = 0;
  private writing = false;
  /** File offset where the next cluster goes. */
  private position = 0;
  /** Where the clusters that reached the disk whole end. */
  private completeEnd = 0;
  private readonly cues: CueEntry[] = [];
  private lastWrittenTicks = 0;
  private clustersWritten = 0;
  private saidCaughtUp = false;
  private failure: string | null = null;
  private finishRequest: { durationTicks: number; done: (finished: boolean) => void } | null = null;
  /** Resolves when the file is closed (true: finished with Cues and Duration). */
  readonly closed: Promise<boolean>;
  private resolveClosed!: (finished: boolean) => void;

  constructor(
    readonly file: string,
    readonly layout: RecordingLayout,
    head: Buffer,
    private readonly maxQueueBytes: number,
    private readonly events: FileWriterEvents,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.writing = true;
    fs.mkdir(path.dirname(file), { recursive: true }, (mkdirError) => {
      this.writing = mkdirError === null;
      if (mkdirError) return this.fail(`cannot create ${path.dirname(file)}: ${describe(mkdirError)}`);
      fs.open(file, 'wx', 0o644, (openError, fd) => {
        this.writing = openError === null;
        if (openError) return this.fail(`cannot create ${file}: ${describe(openError)}`);
        this.fd = fd;
        fs.write(fd, head, 0, head.length, 0, (error, written) => {
          this.writing = false;
          if (error || written !== head.length) return this.fail(`cannot write ${file}: ${error ? describe(error) : 'short write'}`);
          this.position = this.completeEnd = head.length;
          this.pump();
        });
      });
    });
  }

  get failed(): string | null {
    return this.failure;
  }

  /** Bytes of the file that are whole clusters on disk (what a reader may take). */
  get bytesOnDisk(): number {
    return this.completeEnd;
  }

  get keyframes(): readonly CueEntry[] {
    return this.cues;
  }

  get pendingBytes(): number {
    return this.queuedBytes;
  }

  /** Queues a whole cluster (ID, known size, Timecode, blocks). */
  append(parts: Buffer[], timecode: number, keyframe: boolean, lastTicks: number): void {
    if (this.failure || this.finishRequest) return;
    let bytes = 0;
    for (const part of parts) bytes += part.length;
    if (this.queuedBytes + bytes > this.maxQueueBytes) {
      this.fail(`the disk is too slow: ${this.queuedBytes + bytes} bytes waiting to be written (limit ${this.maxQueueBytes})`);
      return;
    }
    this.queue.push({ parts, bytes, timecode, keyframe, lastTicks });
    this.queuedBytes += bytes;
    this.pump();
  }

  /**
   * Writes what is queued, then Cues, Duration and sizes, and closes. After a failure,
   * the file is cut after its last whole cluster and finished there (if the disk lets it).
   */
  finish(durationTicks: number): Promise<boolean> {
    if (!this.finishRequest) {
      this.finishRequest = { durationTicks, done: this.resolveClosed };
      this.pump();
    }
    return this.closed;
  }

  /** Ends the file at its last whole cluster, for a reason of the recorder's. */
  abort(why: string): void {
    this.fail(why);
  }

  private pump(): void {
    if (this.writing) return;
    if (this.failure) {
      this.queue.length = 0;
      this.queuedBytes = 0;
    }
    if (this.queue.length === 0) {
      if (this.finishRequest) this.close();
      return;
    }
    const fd = this.fd;
    if (fd === null) return;
    const batch = this.queue.splice(0, this.queue.length);
    const buffers = batch.flatMap((c) => c.parts);
    const total = batch.reduce((n, c) => n + c.bytes, 0);
    this.writing = true;
    fs.writev(fd, buffers, this.position, (error, written) => {
      this.writing = false;
      this.queuedBytes -= total;
      // Clusters that reached the disk whole count, whatever happened after them.
      let offset = this.position;
      for (const cluster of batch) {
        if (offset + cluster.bytes > this.position + (written ?? 0)) break;
        if (cluster.keyframe) this.cues.push({ timecode: cluster.timecode, offset });
        offset += cluster.bytes;
        this.completeEnd = offset;
        this.lastWrittenTicks = Math.max(this.lastWrittenTicks, cluster.lastTicks);
        this.clustersWritten++;
      }
      this.position += written ?? 0;
      if (error || written !== total) {
        this.fail(`cannot write ${this.file}: ${error ? describe(error) : `short write (${written} of ${total} bytes: disk full?)`}`);
        return;
      }
      if (this.queue.length === 0 && this.cues.length >= 2) this.sayCaughtUp();
      this.pump();
    });
  }

  private sayCaughtUp(): void {
    if (this.saidCaughtUp) return;
    this.saidCaughtUp = true;
    this.events.caughtUp(this);
  }

  private fail(why: string): void {
    if (this.failure) return;
    this.failure = why;
    this.events.failed(this, why);
    this.pump();
    // With nothing left to write, the file is closed now (kept whole up to its last cluster).
    if (!this.finishRequest) this.finish(this.lastWrittenTicks);
  }

  private close(): void {
    const request = this.finishRequest!;
    const fd = this.fd;
    this.fd = null;
    if (fd === null) return request.done(false);
    // Nothing whole on disk: no file worth keeping.
    if (this.clustersWritten === 0) {
      fs.close(fd, () => fs.unlink(this.file, () => request.done(false)));
      return;
    }
    const durationTicks = this.failure ? this.lastWrittenTicks + frameGuess(this.layout) : request.durationTicks;
    const { at, tail, patches } = finishRecording(this.layout, this.cues, durationTicks, this.completeEnd);
    const steps: ((next: (error: NodeJS.ErrnoException | null) => void) => void)[] = [
      (next) => fs.ftruncate(fd, this.completeEnd, next),
      (next) => fs.write(fd, tail, 0, tail.length, at, (error) => next(error)),
      ...patches.map((p) => (next: (error: NodeJS.ErrnoException | null) => void) => fs.write(fd, p.bytes, 0, p.bytes.length, p.offset, (error) => next(error))),
      (next) => fs.fsync(fd, next),
    ];
    const run = (i: number) => {
      if (i === steps.length) {
        // A file shorter than two GOPs (long GOPs, a short --record-segment) that the disk
        // took whole and finished kept up too.
        if (!this.failure) this.sayCaughtUp();
        return fs.close(fd, () => request.done(true));
      }
      steps[i]((error) => {
        // Left as it is, the file stays a playable live WebM; it is finished on the next start.
        if (error) return fs.close(fd, () => request.done(false));
        run(i + 1);
      });
    };
    run(0);
  }
}

/** One video frame at 30 fps, in the file's ticks: how long the last frame is taken to last. */
export function frameGuess(layout: RecordingLayout): number {
  return Math.round(1e9 / 30 / layout.timecodeScale);
}

export function describe(error: NodeJS.ErrnoException): string {
  return error.code ? `${error.code} (${error.message.replace(/^[A-Z]+: /, '').replace(/, \w+ '.*'$/, '')})` : error.message;
}
