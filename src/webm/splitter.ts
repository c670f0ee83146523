import { DEFAULT_LIMITS } from '../config/options.js';
import { ChunkQueue, joinParts } from './chunk-queue.js';
import { ID, LEVEL1_IDS } from './ids.js';
import {
  bodyStart,
  mimeTypeFor,
  parseDocType,
  parseTimecodeScale,
  parseTracks,
  type StreamInfo,
  type TrackInfo,
} from './header.js';
import { readId, readSize, readUint, vintLength, UNKNOWN_SIZE } from './vint.js';

/** Everything before the first Cluster, and what it says. */
export interface WebmHeader {
  /** The header bytes exactly as received. */
  bytes: Buffer;
  /** The EBML header element. */
  ebml: Buffer;
  /** Level-1 elements inside the Segment before the first Cluster (SeekHead, Info, Tags, Tracks, Void, ...), in order. */
  sections: { id: number; bytes: Buffer }[];
  info: StreamInfo;
  /** Stream offset of the EBML header. */
  offset: number;
}

export interface ClusterStart {
  /** Cluster timecode, in timecode-scale ticks. */
  timecode: number;
  timecodeScale: number;
  /** Stream offset of the Cluster element. */
  offset: number;
  /** Payload size, or undefined for an unknown-size (live) Cluster. */
  size?: number;
}

export type Lacing = 'none' | 'xiph' | 'fixed' | 'ebml';
const LACING: readonly Lacing[] = ['none', 'xiph', 'fixed', 'ebml'];

export interface WebmBlock {
  /** SimpleBlock, or a BlockGroup holding a Block. */
  kind: 'simple' | 'group';
  track: number;
  /** Absolute timestamp in timecode-scale ticks: cluster timecode + block's relative timecode. */
  timecode: number;
  keyframe: boolean;
  lacing: Lacing;
  /** BlockDuration of a BlockGroup, in ticks. */
  duration?: number;
  /** The whole element (ID, size, body) as slices of the received chunks: usually one. */
  parts: Buffer[];
  /** Total bytes of the element. */
  size: number;
  /** Where, inside the element, the 2-byte signed relative timecode sits. */
  timecodeOffset: number;
  /** Stream offset of the element. */
  offset: number;
}

export type SplitterErrorCode =
  | 'NOT_WEBM'
  | 'INVALID_ID'
  | 'INVALID_SIZE'
  | 'HEADER_TOO_LARGE'
  | 'ELEMENT_TOO_LARGE'
  | 'UNKNOWN_SIZE'
  | 'NO_TRACKS'
  | 'BAD_BLOCK'
  | 'CLUSTER_OVERRUN'
  | 'TRUNCATED';

export class SplitterError extends Error {
  constructor(
    readonly code: SplitterErrorCode,
    message: string,
    /** Stream offset where the problem was found. */
    readonly offset: number,
  ) {
    super(`${message} (at byte ${offset})`);
    this.name = 'SplitterError';
  }
}

export interface SplitterHandler {
  header(header: WebmHeader): void;
  cluster(cluster: ClusterStart): void;
  block(block: WebmBlock): void;
  end(): void;
  error(error: SplitterError): void;
}

export interface SplitterLimits {
  /** Largest header (everything before the first Cluster) accepted. */
  maxHeaderSize: number;
  /** Largest block, or skipped element, accepted. */
  maxElementSize: number;
}

/** The relay's defaults (--max-header-size, --max-element-size), for splitters made without limits. */
export const DEFAULT_SPLITTER_LIMITS: SplitterLimits = {
  maxHeaderSize: DEFAULT_LIMITS.maxHeaderBytes,
  maxElementSize: DEFAULT_LIMITS.maxElementBytes,
};

const enum State {
  /** Waiting for the ID and size of the next element. */
  ElementHeader,
  /** Waiting for a whole element (header-level element, timecode, block) to be buffered. */
  Collect,
  /** Discarding the body of an element we do not need. */
  Skip,
  /** Ended or failed: input is ignored until reset(). */
  Done,
}

const ID_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(ID).map(([name, id]) => [id, name]),
);
const idName = (id: number): string => ID_NAMES[id] ?? `0x${id.toString(16)}`;

/**
 * A push parser that splits a live WebM byte stream into header, cluster starts and
 * blocks. Feed it chunks of any size; it calls the handler synchronously, in stream
 * order. Memory stays bounded by the limits whatever bytes arrive: an element is
 * only buffered after its declared size has been checked.
 */
export class WebmSplitter {
  private readonly queue = new ChunkQueue();
  private readonly limits: SplitterLimits;
  private state = State.ElementHeader;
  /** Stream offset of the first byte in the queue. */
  private offset = 0;

  private sawEbmlHeader = false;
  /** Non-null while gathering a header (from an EBML header to the first Cluster). */
  private headerParts: Buffer[] | null = null;
  private headerSize = 0;
  private headerOffset = 0;
  private ebml: Buffer | null = null;
  private sections: { id: number; bytes: Buffer }[] = [];
  private info: StreamInfo | null = null;

  private inCluster = false;
  /** Stream offset where a known-size cluster ends; -1 for unknown size. */
  private clusterEnd = -1;
  private clusterOffset = 0;
  private clusterSize: number | undefined;
  /** -1 until the cluster's Timecode element has been read. */
  private clusterTimecode = -1;

  private elementId = 0;
  private elementTotal = 0;
  private skipLeft = 0;

  constructor(
    private readonly handler: SplitterHandler,
    limits: Partial<SplitterLimits> = {},
  ) {
    this.limits = { ...DEFAULT_SPLITTER_LIMITS, ...limits };
  }

  get ended(): boolean {
    return this.state === State.Done;
  }

  feed(chunk: Buffer): void {
    if (this.state === State.Done) return;
    this.queue.push(chunk);
    this.run();
  }

  /** The producer has finished: reports `end`, or a TRUNCATED error when inside an element. */
  end(): void {
    if (this.state === State.Done) return;
    if (this.state !== State.ElementHeader || this.queue.length > 0) {
      const what = this.state === State.ElementHeader ? 'an element header' : idName(this.elementId);
      this.fail('TRUNCATED', `stream ended inside ${what}`);
      return;
    }
    this.state = State.Done;
    this.handler.end();
  }

  private run(): void {
    for (;;) {
      switch (this.state) {
        case State.ElementHeader:
          if (!this.readElementHeader()) return;
          break;
        case State.Collect:
          if (this.queue.length < this.elementTotal) return;
          this.collected(this.queue.take(this.elementTotal));
          break;
        case State.Skip: {
          const dropped = this.queue.skip(this.skipLeft);
          this.offset += dropped;
          this.skipLeft -= dropped;
          if (this.skipLeft > 0) return;
          this.state = State.ElementHeader;
          break;
        }
        case State.Done:
          return;
      }
    }
  }

  /** Reads the next element's ID and size and decides what to do with it. False: need more bytes. */
  private readElementHeader(): boolean {
    if (this.inCluster && this.clusterEnd >= 0 && this.offset >= this.clusterEnd) this.inCluster = false;
    const queue = this.queue;
    if (queue.length < 2) return false;
    const idLength = vintLength(queue.byteAt(0));
    if (idLength === 0 || idLength > 4) return this.fail('INVALID_ID', 'invalid element ID');
    if (queue.length < idLength + 1) return false;
    const sizeLength = vintLength(queue.byteAt(idLength));
    if (sizeLength === 0) return this.fail('INVALID_SIZE', 'invalid element size');
    const headerLength = idLength + sizeLength;
    if (queue.length < headerLength) return false;
    const head = queue.peek(headerLength);
    const id = readId(head, 0, idLength);
    const size = readSize(head, idLength, sizeLength);

    if (!this.sawEbmlHeader && id !== ID.EBML) {
      return this.fail('NOT_WEBM', `stream does not start with an EBML header (found element ${idName(id)})`);
    }
    // An unknown-size Cluster has no end marker: it ends where a level-1 element begins.
    if (this.inCluster && LEVEL1_IDS.has(id)) this.inCluster = false;
    this.elementId = id;
    return this.inCluster
      ? this.clusterChild(id, size, headerLength)
      : this.topLevel(id, size, headerLength);
  }

  private topLevel(id: number, size: number, headerLength: number): boolean {
    if (id === ID.Segment) {
      // Counted like any header bytes: a stream of Segment headers must not grow the header forever.
      if (this.headerParts && this.headerSize + headerLength > this.limits.maxHeaderSize) {
        return this.fail('HEADER_TOO_LARGE', `header exceeds ${this.limits.maxHeaderSize} bytes`);
      }
      this.consumeInto(headerLength, this.headerParts);
      return true;
    }
    if (id === ID.Cluster) return this.enterCluster(size, headerLength);
    if (size === UNKNOWN_SIZE) return this.fail('UNKNOWN_SIZE', `unknown-size ${idName(id)} is not supported`);
    if (id === ID.EBML) {
      // A new EBML header starts a new stream (a producer restarted with other settings).
      this.sawEbmlHeader = true;
      this.headerParts = [];
      this.headerSize = 0;
      this.headerOffset = this.offset;
      this.ebml = null;
      this.sections = [];
    }
    if (this.headerParts) {
      if (this.headerSize + headerLength + size > this.limits.maxHeaderSize) {
        return this.fail(
          'HEADER_TOO_LARGE',
          `header exceeds ${this.limits.maxHeaderSize} bytes (${idName(id)} of ${size} bytes)`,
        );
      }
      return this.collect(headerLength + size);
    }
    return this.skip(id, headerLength + size);
  }

  private enterCluster(size: number, headerLength: number): boolean {
    if (this.headerParts) {
      if (!this.emitHeader()) return false;
    } else if (!this.info) {
      return this.fail('NO_TRACKS', 'Cluster before any stream header');
    }
    this.clusterOffset = this.offset;
    this.consumeInto(headerLength, null);
    this.inCluster = true;
    this.clusterSize = size === UNKNOWN_SIZE ? undefined : size;
    this.clusterEnd = size === UNKNOWN_SIZE ? -1 : this.offset + size;
    this.clusterTimecode = -1;
    return true;
  }

  private clusterChild(id: number, size: number, headerLength: number): boolean {
    if (size === UNKNOWN_SIZE) return this.fail('UNKNOWN_SIZE', `unknown-size ${idName(id)} inside a Cluster`);
    const total = headerLength + size;
    if (this.clusterEnd >= 0 && this.offset + total > this.clusterEnd) {
      return this.fail('CLUSTER_OVERRUN', `${idName(id)} of ${size} bytes runs past the end of its Cluster`);
    }
    if (id === ID.SimpleBlock || id === ID.BlockGroup || id === ID.Timecode) {
      if (size > this.limits.maxElementSize) {
        return this.fail('ELEMENT_TOO_LARGE', `${idName(id)} of ${size} bytes exceeds the ${this.limits.maxElementSize}-byte limit`);
      }
      if (id === ID.Timecode && size > 8) return this.fail('INVALID_SIZE', `Timecode of ${size} bytes`);
      return this.collect(total);
    }
    return this.skip(id, total);
  }

  private collect(total: number): boolean {
    this.elementTotal = total;
    this.state = State.Collect;
    return true;
  }

  private skip(id: number, total: number): boolean {
    if (total > this.limits.maxElementSize) {
      return this.fail('ELEMENT_TOO_LARGE', `${idName(id)} of ${total} bytes exceeds the ${this.limits.maxElementSize}-byte limit`);
    }
    this.skipLeft = total;
    this.state = State.Skip;
    return true;
  }

  private consumeInto(n: number, into: Buffer[] | null): void {
    const parts = this.queue.take(n);
    this.offset += n;
    if (into) {
      into.push(...parts);
      this.headerSize += n;
    }
  }

  /** A whole element has been buffered. */
  private collected(parts: Buffer[]): void {
    const id = this.elementId;
    const offset = this.offset;
    const total = this.elementTotal;
    this.offset += total;
    this.state = State.ElementHeader;
    if (!this.inCluster) {
      this.headerElement(id, joinParts(parts));
    } else if (id === ID.Timecode) {
      const bytes = joinParts(parts);
      this.clusterTimecode = readUint(bytes, bodyStart(bytes), bytes.length);
      this.handler.cluster({
        timecode: this.clusterTimecode,
        timecodeScale: this.info!.timecodeScale,
        offset: this.clusterOffset,
        size: this.clusterSize,
      });
    } else {
      this.blockElement(id, parts, total, offset);
    }
  }

  private headerElement(id: number, bytes: Buffer): void {
    const parts = this.headerParts!;
    parts.push(bytes);
    this.headerSize += bytes.length;
    if (id === ID.EBML) this.ebml = bytes;
    else this.sections.push({ id, bytes });
  }

  private emitHeader(): boolean {
    const ebml = this.ebml;
    if (!ebml) return this.fail('NOT_WEBM', 'Cluster before an EBML header');
    const docType = parseDocType(ebml, bodyStart(ebml), ebml.length);
    if (docType !== 'webm' && docType !== 'matroska') {
      return this.fail('NOT_WEBM', `DocType "${docType}" is neither webm nor matroska`);
    }
    let timecodeScale = 1_000_000;
    let tracks: TrackInfo[] = [];
    for (const { id, bytes } of this.sections) {
      if (id === ID.Info) timecodeScale = parseTimecodeScale(bytes, bodyStart(bytes), bytes.length);
      else if (id === ID.Tracks) tracks = parseTracks(bytes, bodyStart(bytes), bytes.length);
    }
    if (tracks.length === 0) return this.fail('NO_TRACKS', 'no Tracks before the first Cluster');
    this.info = { docType, timecodeScale, tracks, mimeType: mimeTypeFor(tracks) };
    const header: WebmHeader = {
      bytes: Buffer.concat(this.headerParts!),
      ebml,
      sections: this.sections,
      info: this.info,
      offset: this.headerOffset,
    };
    this.headerParts = null;
    this.handler.header(header);
    return true;
  }

  private blockElement(id: number, parts: Buffer[], total: number, offset: number): void {
    if (this.clusterTimecode < 0) {
      this.fail('BAD_BLOCK', 'block before its Cluster Timecode', offset);
      return;
    }
    const view = new PartsView(parts);
    let blockStart = view.elementDataStart(0);
    let blockEnd = total;
    let keyframe: boolean | undefined;
    let duration: number | undefined;
    if (id === ID.BlockGroup) {
      // Find the Block, and whether it references other frames (then it is not a keyframe).
      let referenced = false;
      let found = false;
      for (let pos = blockStart; pos < total; ) {
        const child = view.element(pos, total);
        if (!child) break;
        if (child.id === ID.Block && !found) {
          found = true;
          blockStart = child.dataStart;
          blockEnd = child.dataEnd;
        } else if (child.id === ID.ReferenceBlock) {
          referenced = true;
        } else if (child.id === ID.BlockDuration) {
          duration = view.uint(child.dataStart, child.dataEnd);
        }
        pos = child.dataEnd;
      }
      if (!found) {
        this.fail('BAD_BLOCK', 'BlockGroup without a Block', offset);
        return;
      }
      keyframe = !referenced;
    }
    const trackLength = blockStart < blockEnd ? vintLength(view.byte(blockStart)) : 0;
    if (trackLength === 0 || blockStart + trackLength + 3 > blockEnd) {
      this.fail('BAD_BLOCK', 'malformed block header', offset);
      return;
    }
    const track = view.vint(blockStart, trackLength);
    const timecodeOffset = blockStart + trackLength;
    const relative = ((view.byte(timecodeOffset) << 24) >> 16) | view.byte(timecodeOffset + 1);
    const flags = view.byte(timecodeOffset + 2);
    this.handler.block({
      kind: id === ID.SimpleBlock ? 'simple' : 'group',
      track,
      timecode: this.clusterTimecode + relative,
      keyframe: keyframe ?? (flags & 0x80) !== 0,
      lacing: LACING[(flags >> 1) & 3],
      duration,
      parts,
      size: total,
      timecodeOffset,
      offset,
    });
  }

  /** `offset` defaults to the current position, which is past an element already consumed. */
  private fail(code: SplitterErrorCode, message: string, offset = this.offset): false {
    this.state = State.Done;
    this.queue.clear();
    this.handler.error(new SplitterError(code, message, offset));
    return false;
  }
}

/** Random access to the bytes of an element held as slices, without joining them. */
class PartsView {
  constructor(private readonly parts: readonly Buffer[]) {}

  byte(index: number): number {
    let i = index;
    for (const part of this.parts) {
      if (i < part.length) return part[i];
      i -= part.length;
    }
    return 0;
  }

  uint(start: number, end: number): number {
    let value = 0;
    for (let i = start; i < end; i++) value = value * 256 + this.byte(i);
    return value;
  }

  /**
   * A vint's value, marker bit masked off first: subtracting 2^(7n) afterwards would
   * lose the low bits of 8-byte vints to floating point.
   */
  vint(start: number, length: number): number {
    let value = this.byte(start) & (0xff >> length);
    for (let i = start + 1; i < start + length; i++) value = value * 256 + this.byte(i);
    return value;
  }

  /** Where the data of the element at `pos` starts. */
  elementDataStart(pos: number): number {
    const idLength = vintLength(this.byte(pos));
    return pos + idLength + vintLength(this.byte(pos + idLength));
  }

  element(pos: number, end: number): { id: number; dataStart: number; dataEnd: number } | null {
    const idLength = vintLength(this.byte(pos));
    if (idLength === 0 || idLength > 4 || pos + idLength >= end) return null;
    const sizeLength = vintLength(this.byte(pos + idLength));
    const dataStart = pos + idLength + sizeLength;
    if (sizeLength === 0 || dataStart > end) return null;
    const id = this.uint(pos, pos + idLength);
    const size = this.vint(pos + idLength, sizeLength);
    const dataEnd = dataStart + size;
    if (size < 0 || dataEnd > end) return null;
    return { id, dataStart, dataEnd };
  }
}
