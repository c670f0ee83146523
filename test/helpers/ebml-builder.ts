/**
 * Builds small WebM streams byte by byte, so tests can state exactly which structures
 * (unknown sizes of every length, lacing, BlockGroups, stray elements...) a stream
 * holds; and records what a WebmSplitter reports about a stream fed in given chunks.
 * Deliberately independent of src/webm's own vint code, so a bug there cannot
 * cancel out in the tests.
 */
import { joinParts } from '../../src/webm/chunk-queue.js';
import { WebmSplitter, type SplitterLimits, type WebmBlock, type WebmHeader } from '../../src/webm/splitter.js';

export const IDS = {
  EBML: 0x1a45dfa3,
  EBMLVersion: 0x4286,
  DocType: 0x4282,
  Segment: 0x18538067,
  SeekHead: 0x114d9b74,
  Info: 0x1549a966,
  TimecodeScale: 0x2ad7b1,
  Tracks: 0x1654ae6b,
  TrackEntry: 0xae,
  TrackNumber: 0xd7,
  TrackType: 0x83,
  CodecID: 0x86,
  CodecPrivate: 0x63a2,
  Video: 0xe0,
  PixelWidth: 0xb0,
  PixelHeight: 0xba,
  Audio: 0xe1,
  SamplingFrequency: 0xb5,
  Channels: 0x9f,
  Cluster: 0x1f43b675,
  Timecode: 0xe7,
  SimpleBlock: 0xa3,
  BlockGroup: 0xa0,
  Block: 0xa1,
  ReferenceBlock: 0xfb,
  BlockDuration: 0x9b,
  Cues: 0x1c53bb6b,
  Tags: 0x1254c367,
  Void: 0xec,
  CRC32: 0xbf,
} as const;

/** A vint of `value` in exactly `length` bytes (default: the shortest that is not all ones). */
export function vint(value: number, length?: number): Buffer {
  let len = length ?? 1;
  if (length === undefined) while (len < 8 && value >= 2 ** (7 * len) - 1) len++;
  if (value >= 2 ** (7 * len)) throw new RangeError(`${value} does not fit a ${len}-byte vint`);
  const out = Buffer.alloc(len);
  let v = value;
  for (let i = len - 1; i >= 0; i--) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  out[0] |= 0x80 >> (len - 1);
  return out;
}

/** The all-ones size field of `length` bytes: "unknown size". */
export function unknownSize(length: number): Buffer {
  const out = Buffer.alloc(length, 0xff);
  out[0] = 0xff >> (length - 1);
  return out;
}

export function idBytes(id: number): Buffer {
  const hex = id.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
}

type Bytes = Buffer | Uint8Array;

/** An element of known size; `sizeLength` forces a longer-than-needed size field. */
export function el(id: number, payload: Bytes | Bytes[] = [], sizeLength?: number): Buffer {
  const body = Buffer.concat(Array.isArray(payload) ? payload : [payload]);
  return Buffer.concat([idBytes(id), vint(body.length, sizeLength), body]);
}

/** An element whose size field says "unknown" (`sizeLength` bytes of all ones). */
export function unknownEl(id: number, sizeLength: number, children: Bytes[] = []): Buffer {
  return Buffer.concat([idBytes(id), unknownSize(sizeLength), ...children]);
}

export function uintEl(id: number, value: number): Buffer {
  const bytes: number[] = [];
  for (let v = value; bytes.length === 0 || v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return el(id, Buffer.from(bytes));
}

export function stringEl(id: number, text: string): Buffer {
  return el(id, Buffer.from(text, 'latin1'));
}

export function floatEl(id: number, value: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(value);
  return el(id, b);
}

export function ebmlHeader(docType = 'webm'): Buffer {
  return el(IDS.EBML, [uintEl(IDS.EBMLVersion, 1), stringEl(IDS.DocType, docType)]);
}

export function info(timecodeScale = 1_000_000): Buffer {
  return el(IDS.Info, uintEl(IDS.TimecodeScale, timecodeScale));
}

export interface TrackSpec {
  number: number;
  type: 'video' | 'audio';
  codecId: string;
  codecPrivate?: Buffer;
  width?: number;
  height?: number;
  sampleRate?: number;
  channels?: number;
}

export function tracks(specs: TrackSpec[]): Buffer {
  return el(
    IDS.Tracks,
    specs.map((t) => {
      const children = [
        uintEl(IDS.TrackNumber, t.number),
        uintEl(IDS.TrackType, t.type === 'video' ? 1 : 2),
        stringEl(IDS.CodecID, t.codecId),
      ];
      if (t.codecPrivate) children.push(el(IDS.CodecPrivate, t.codecPrivate));
      if (t.type === 'video') {
        children.push(el(IDS.Video, [uintEl(IDS.PixelWidth, t.width ?? 0), uintEl(IDS.PixelHeight, t.height ?? 0)]));
      } else {
        children.push(el(IDS.Audio, [floatEl(IDS.SamplingFrequency, t.sampleRate ?? 48000), uintEl(IDS.Channels, t.channels ?? 2)]));
      }
      return el(IDS.TrackEntry, children);
    }),
  );
}

export const LACING_FLAGS = { none: 0x00, xiph: 0x02, fixed: 0x04, ebml: 0x06 } as const;
export type LacingName = keyof typeof LACING_FLAGS;

/** The body shared by SimpleBlock and Block: track vint, signed 16-bit relative timecode, flags, frame data. */
function blockBody(track: number, relative: number, flags: number, frames: Buffer[], lacing: LacingName): Buffer {
  const head = Buffer.alloc(3);
  head.writeInt16BE(relative, 0);
  head[2] = flags | LACING_FLAGS[lacing];
  const parts = [vint(track), head];
  if (lacing !== 'none') {
    parts.push(Buffer.from([frames.length - 1]));
    const sizes = frames.slice(0, -1).map((f) => f.length);
    if (lacing === 'xiph') {
      for (const size of sizes) parts.push(Buffer.from([...Array(Math.floor(size / 255)).fill(255), size % 255]));
    } else if (lacing === 'ebml') {
      parts.push(vint(sizes[0]));
      // Later sizes are signed differences, biased by 2^(7n-1) - 1 in an n-byte vint.
      for (let i = 1; i < sizes.length; i++) parts.push(vint(sizes[i] - sizes[i - 1] + 63, 1));
    }
  }
  return Buffer.concat([...parts, ...frames]);
}

export interface BlockSpec {
  track: number;
  /** Relative to the cluster timecode, in ticks. */
  relative: number;
  keyframe?: boolean;
  frames?: Buffer[];
  lacing?: LacingName;
}

export function simpleBlock(b: BlockSpec): Buffer {
  const frames = b.frames ?? [Buffer.from(`frame t${b.track} @${b.relative}`)];
  return el(IDS.SimpleBlock, blockBody(b.track, b.relative, b.keyframe ? 0x80 : 0, frames, b.lacing ?? 'none'));
}

/** A BlockGroup; it is a keyframe exactly when it has no ReferenceBlock. */
export function blockGroup(b: BlockSpec & { references?: number[]; duration?: number; extra?: Buffer[] }): Buffer {
  const frames = b.frames ?? [Buffer.from(`group t${b.track} @${b.relative}`)];
  const children = [el(IDS.Block, blockBody(b.track, b.relative, 0, frames, b.lacing ?? 'none'))];
  if (b.duration !== undefined) children.push(uintEl(IDS.BlockDuration, b.duration));
  for (const ref of b.references ?? []) {
    const v = Buffer.alloc(2);
    v.writeInt16BE(ref);
    children.push(el(IDS.ReferenceBlock, v));
  }
  return el(IDS.BlockGroup, [...(b.extra ?? []), ...children]);
}

/** A Cluster; `sizeLength` 1..8 writes an unknown size of that length, 'known' a real size. */
export function cluster(timecode: number, children: Buffer[], sizeLength: number | 'known' = 8): Buffer {
  const body = [uintEl(IDS.Timecode, timecode), ...children];
  return sizeLength === 'known' ? el(IDS.Cluster, body) : unknownEl(IDS.Cluster, sizeLength, body);
}

export const VP8_OPUS_TRACKS: TrackSpec[] = [
  { number: 1, type: 'video', codecId: 'V_VP8', width: 320, height: 240 },
  { number: 2, type: 'audio', codecId: 'A_OPUS', sampleRate: 48000, channels: 2 },
];

/** EBML header + Segment header + Info + Tracks: everything before the first Cluster. */
export function streamHeader(opts: { tracks?: TrackSpec[]; segmentSizeLength?: number; extra?: Buffer[] } = {}): Buffer {
  return Buffer.concat([
    ebmlHeader(),
    unknownEl(IDS.Segment, opts.segmentSizeLength ?? 8),
    info(),
    ...(opts.extra ?? []),
    tracks(opts.tracks ?? VP8_OPUS_TRACKS),
  ]);
}

/** A deterministic PRNG (mulberry32) so every random case can be replayed from its seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Where an element's ID and size fields sit, found by walking a well-formed stream. */
export interface ElementField {
  id: number;
  offset: number;
  idLength: number;
  sizeLength: number;
  dataStart: number;
  dataEnd: number;
}

const MASTERS = new Set<number>([IDS.Segment, IDS.TrackEntry, IDS.Cluster, IDS.BlockGroup, IDS.Info, IDS.Tracks, IDS.Video, IDS.Audio]);

function firstBitLength(byte: number): number {
  for (let len = 1; len <= 8; len++) if (byte & (0x100 >> len)) return len;
  return 0;
}

/**
 * Every element of a well-formed stream (descending into Segment, Cluster, BlockGroup,
 * Info, Tracks), in stream order. Unknown sizes run to the end of the enclosing range.
 */
export function walkElements(buf: Buffer, start = 0, end = buf.length, out: ElementField[] = []): ElementField[] {
  let pos = start;
  while (pos < end) {
    const idLength = firstBitLength(buf[pos]);
    if (idLength === 0 || idLength > 4) throw new Error(`bad ID at ${pos}`);
    const sizeLength = firstBitLength(buf[pos + idLength]);
    if (sizeLength === 0) throw new Error(`bad size at ${pos + idLength}`);
    let id = 0;
    for (let i = 0; i < idLength; i++) id = id * 256 + buf[pos + i];
    let size = buf[pos + idLength] & (0xff >> sizeLength);
    let allOnes = size === 0xff >> sizeLength;
    for (let i = 1; i < sizeLength; i++) {
      size = size * 256 + buf[pos + idLength + i];
      if (buf[pos + idLength + i] !== 0xff) allOnes = false;
    }
    const dataStart = pos + idLength + sizeLength;
    const field: ElementField = { id, offset: pos, idLength, sizeLength, dataStart, dataEnd: allOnes ? end : dataStart + size };
    out.push(field);
    if (MASTERS.has(id)) {
      if (allOnes) {
        // An unknown-size master ends where a sibling (Cluster) or the enclosing range does:
        // walk its children at this level instead of recursing.
        field.dataEnd = dataStart;
        pos = dataStart;
        continue;
      }
      // A slice of a stream may cut a known-size master short: walk what is there.
      walkElements(buf, dataStart, Math.min(field.dataEnd, end), out);
    }
    pos = field.dataEnd;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Recording what the splitter reports.

export type SplitEvent =
  | { type: 'header'; offset: number; bytes: Buffer; header: WebmHeader }
  | { type: 'cluster'; offset: number; timecode: number; size: number | undefined }
  | {
      type: 'block';
      offset: number;
      kind: 'simple' | 'group';
      track: number;
      timecode: number;
      keyframe: boolean;
      lacing: string;
      duration: number | undefined;
      size: number;
      timecodeOffset: number;
      /** The element's bytes, parts joined. */
      bytes: Buffer;
    }
  | { type: 'end' }
  | { type: 'error'; code: string; offset: number; message: string };

/** Chunk sizes: a fixed size, or a function giving the next size. */
export type Chunking = number | (() => number);

/**
 * Feeds `input` in chunks, then end(); returns every event. A `throw` out of feed()
 * or end() is recorded as `thrown` rather than propagated, so callers can assert on it.
 */
export function split(
  input: Buffer,
  chunking: Chunking = input.length || 1,
  limits: Partial<SplitterLimits> = {},
): { events: SplitEvent[]; thrown?: unknown; maxParts: number } {
  const events: SplitEvent[] = [];
  let maxParts = 0;
  const splitter = new WebmSplitter(
    {
      header: (h) => events.push({ type: 'header', offset: h.offset, bytes: h.bytes, header: h }),
      cluster: (c) => events.push({ type: 'cluster', offset: c.offset, timecode: c.timecode, size: c.size }),
      block: (b) => {
        maxParts = Math.max(maxParts, b.parts.length);
        events.push({
          type: 'block',
          offset: b.offset,
          kind: b.kind,
          track: b.track,
          timecode: b.timecode,
          keyframe: b.keyframe,
          lacing: b.lacing,
          duration: b.duration,
          size: b.size,
          timecodeOffset: b.timecodeOffset,
          bytes: Buffer.concat(b.parts),
        });
      },
      end: () => events.push({ type: 'end' }),
      error: (e) => events.push({ type: 'error', code: e.code, offset: e.offset, message: e.message }),
    },
    limits,
  );
  const next = typeof chunking === 'number' ? () => chunking : chunking;
  try {
    for (let pos = 0; pos < input.length; ) {
      const n = Math.max(1, next());
      splitter.feed(input.subarray(pos, pos + n));
      pos += n;
    }
    splitter.end();
  } catch (thrown) {
    return { events, thrown, maxParts };
  }
  return { events, maxParts };
}

export function blocksOf(events: SplitEvent[]): Extract<SplitEvent, { type: 'block' }>[] {
  return events.filter((e): e is Extract<SplitEvent, { type: 'block' }> => e.type === 'block');
}

export function errorOf(events: SplitEvent[]): Extract<SplitEvent, { type: 'error' }> | undefined {
  return events.find((e): e is Extract<SplitEvent, { type: 'error' }> => e.type === 'error');
}

export interface ParsedWebm {
  headers: WebmHeader[];
  clusters: { timecode: number; blocks: WebmBlock[] }[];
  blocks: WebmBlock[];
}

/** Everything a splitter reports for a whole stream, with block parts joined; a splitter error throws. */
export function parseWebm(bytes: Buffer): ParsedWebm {
  const parsed: ParsedWebm = { headers: [], clusters: [], blocks: [] };
  const splitter = new WebmSplitter({
    header: (h) => parsed.headers.push(h),
    cluster: (c) => parsed.clusters.push({ timecode: c.timecode, blocks: [] }),
    block: (b) => {
      const block = { ...b, parts: [joinParts(b.parts)] };
      parsed.blocks.push(block);
      parsed.clusters[parsed.clusters.length - 1].blocks.push(block);
    },
    end: () => {},
    error: (e) => {
      throw e;
    },
  });
  splitter.feed(bytes);
  splitter.end();
  return parsed;
}
