/**
 * The splitter's twin: writes WebM files that a player can seek in (known sizes,
 * Duration, Cues, SeekHead), in a way that survives a crash at any byte.
 *
 * Layout of a recording, as it is written while the stream is live:
 *
 *   EBML header
 *   Segment, size unknown (8-byte size field)
 *     Void      reserved for the SeekHead
 *     Info      8-byte size field, no Duration yet
 *     Void      exactly the size of the Duration element to come
 *     Tracks    the stream's
 *     Cluster*  each written whole, with its known size
 *
 * and on finishing: Cues appended, the SeekHead written into the first Void, Info
 * rewritten with its Duration over itself and the second Void, and the Segment's size
 * set. Until then the file is a valid live WebM (unknown-size Segment) that plays from
 * its start; a file whose Segment size is still unknown is unfinished, and
 * `readLayout` gives what is needed to finish it later (crash recovery).
 */
import { ID } from './ids.js';
import { bodyStart, forEachChild, parseTimecodeScale, parseTracks, type TrackInfo } from './header.js';
import { readId, readSize, readUint, sizeLength, vintLength, writeSize, UNKNOWN_SIZE } from './vint.js';

// --- EBML encoding --------------------------------------------------------------------

/** An element ID as written (the marker bits are part of the ID). */
export function idBytes(id: number): Buffer {
  const length = id >= 0x1000000 ? 4 : id >= 0x10000 ? 3 : id >= 0x100 ? 2 : 1;
  const out = Buffer.alloc(length);
  out.writeUIntBE(id, 0, length);
  return out;
}

/** A size field: `length` bytes, or the fewest that hold `value` (all-ones is reserved for "unknown"). */
export function sizeField(value: number, length?: number): Buffer {
  const n = length ?? sizeLength(value);
  if (value >= 2 ** (7 * n) - 1) throw new RangeError(`size ${value} does not fit in ${n} bytes`);
  const out = Buffer.alloc(n);
  writeSize(out, 0, value, n);
  return out;
}

/** The 8-byte "unknown size" of a live Segment or Cluster. */
export const UNKNOWN_SIZE_FIELD = Buffer.from([0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export function element(id: number, body: Buffer | Buffer[], sizeLength?: number): Buffer {
  const data = Array.isArray(body) ? Buffer.concat(body) : body;
  return Buffer.concat([idBytes(id), sizeField(data.length, sizeLength), data]);
}

export function uintElement(id: number, value: number, length?: number): Buffer {
  let n = length ?? 1;
  if (length === undefined) while (n < 8 && value >= 2 ** (8 * n)) n++;
  const body = Buffer.alloc(n);
  let v = value;
  for (let i = n - 1; i >= 0; i--) {
    body[i] = v % 256;
    v = Math.floor(v / 256);
  }
  return element(id, body);
}

export function floatElement(id: number, value: number): Buffer {
  const body = Buffer.alloc(8);
  body.writeDoubleBE(value);
  return element(id, body);
}

/** A Void element of exactly `total` bytes (at least 2). */
export function voidElement(total: number): Buffer {
  if (total < 2) throw new RangeError('a Void element takes at least 2 bytes');
  const out = Buffer.alloc(total);
  out[0] = ID.Void;
  // One size byte holds up to 126; beyond, an 8-byte size field (which needs 9 bytes of header).
  if (total - 2 <= 126) out[1] = 0x80 | (total - 2);
  else sizeField(total - 9, 8).copy(out, 1);
  return out;
}

// --- Recording layout -------------------------------------------------------------------

/** Bytes kept at the Segment's start for the SeekHead (3 entries take 68). */
const SEEK_HEAD_RESERVE = 96;
/** A Duration element: 2-byte ID, 1-byte size, float64. */
const DURATION_BYTES = 11;
const CLUSTER_HEADER_BYTES = 4 + 8 + 10;
/** Matroska's DateUTC counts nanoseconds from 2001-01-01T00:00:00Z. */
const MATROSKA_EPOCH_MS = Date.UTC(2001, 0, 1);

/** Where the parts of a recording sit in its file (offsets from the file's start). */
export interface RecordingLayout {
  segmentOffset: number;
  segmentDataStart: number;
  /** The space for the SeekHead (a Void while unfinished). */
  reserveOffset: number;
  reserveLength: number;
  infoOffset: number;
  /** Info's payload without Duration. */
  infoBody: Buffer;
  /** Info and the Void after it: what the Info with Duration is written over. */
  infoSpan: number;
  tracksOffset: number;
  firstClusterOffset: number;
  timecodeScale: number;
  tracks: TrackInfo[];
  /** The EBML header and Tracks elements as in the file: what a file cut from this one starts with. */
  ebml: Buffer;
  tracksElement: Buffer;
  /** The track whose keyframes the Cues point at (video, else the first). */
  cueTrack: number;
  /** Wall-clock time of the first cluster (ms since 1970), from DateUTC. */
  startMs: number | null;
  /** Duration in ticks, when the file is finished. */
  durationTicks: number | null;
  /** The Segment's size is known: the file was finished. */
  finished: boolean;
  /** Where the Cues element starts (the clusters end there), from a finished file's SeekHead. */
  cuesOffset: number | null;
}

export interface CueEntry {
  /** Cluster timecode in ticks (the file's own time, from 0). */
  timecode: number;
  /** File offset of the Cluster element. */
  offset: number;
}

export interface FinishedTail {
  /** Bytes to write at `at` (the Cues): the file ends after them. */
  at: number;
  tail: Buffer;
  /** Bytes to write over what is already there. */
  patches: { offset: number; bytes: Buffer }[];
}

/** The parts of an init segment (EBML header, live Segment, Info, Tracks) that a file takes. */
function splitInit(init: Buffer): { ebml: Buffer; info: Buffer; tracks: Buffer } {
  let ebml: Buffer | null = null;
  let info: Buffer | null = null;
  let tracks: Buffer | null = null;
  forEachChild(init, 0, init.length, (id, dataStart, dataEnd, start) => {
    if (id === ID.EBML) ebml = init.subarray(start, dataEnd);
    if (id !== ID.Segment) return;
    forEachChild(init, dataStart, dataEnd, (child, _s, end, childStart) => {
      if (child === ID.Info) info = init.subarray(childStart, end);
      else if (child === ID.Tracks) tracks = init.subarray(childStart, end);
    });
  });
  if (!ebml || !info || !tracks) throw new Error('init segment without EBML header, Info or Tracks');
  return { ebml, info, tracks };
}

/** Info's payload without the children a recording writes itself. */
function infoBodyOf(info: Buffer, drop: readonly number[]): Buffer {
  const kept: Buffer[] = [];
  forEachChild(info, bodyStart(info), info.length, (id, _s, end, start) => {
    if (!drop.includes(id)) kept.push(info.subarray(start, end));
  });
  return Buffer.concat(kept);
}

function cueTrackOf(tracks: readonly TrackInfo[]): number {
  return (tracks.find((t) => t.kind === 'video') ?? tracks[0])?.number ?? 1;
}

/**
 * The head of a new recording: everything before its first cluster, from the stream's
 * init segment. `startMs`: wall-clock time of its first cluster (Info/DateUTC).
 */
export function startRecording(initSegment: Buffer, startMs: number): { head: Buffer; layout: RecordingLayout } {
  const { ebml, info, tracks } = splitInit(initSegment);
  const dateUtc = Buffer.alloc(8);
  dateUtc.writeBigInt64BE(BigInt(Math.round(startMs - MATROSKA_EPOCH_MS)) * 1_000_000n);
  const infoBody = Buffer.concat([
    infoBodyOf(info, [ID.Duration, ID.DateUTC, ID.Void, ID.CRC32]),
    element(ID.DateUTC, dateUtc),
  ]);
  const infoElement = element(ID.Info, infoBody, 8);
  const segmentOffset = ebml.length;
  const segmentDataStart = segmentOffset + 4 + 8;
  const reserveOffset = segmentDataStart;
  const infoOffset = reserveOffset + SEEK_HEAD_RESERVE;
  const tracksOffset = infoOffset + infoElement.length + DURATION_BYTES;
  const head = Buffer.concat([
    ebml,
    idBytes(ID.Segment),
    UNKNOWN_SIZE_FIELD,
    voidElement(SEEK_HEAD_RESERVE),
    infoElement,
    voidElement(DURATION_BYTES),
    tracks,
  ]);
  const trackList = parseTracks(tracks, bodyStart(tracks), tracks.length);
  return {
    head,
    layout: {
      segmentOffset,
      segmentDataStart,
      reserveOffset,
      reserveLength: SEEK_HEAD_RESERVE,
      infoOffset,
      infoBody,
      infoSpan: infoElement.length + DURATION_BYTES,
      tracksOffset,
      firstClusterOffset: head.length,
      timecodeScale: parseTimecodeScale(info, bodyStart(info), info.length),
      tracks: trackList,
      ebml: Buffer.from(ebml),
      tracksElement: Buffer.from(tracks),
      cueTrack: cueTrackOf(trackList),
      startMs,
      durationTicks: null,
      finished: false,
      cuesOffset: null,
    },
  };
}

/** A Cluster of known size: its header (ID, size, Timecode) followed by `blocks` (whole elements). */
export function clusterElement(timecode: number, blocks: readonly Buffer[]): Buffer[] {
  let size = 10;
  for (const b of blocks) size += b.length;
  const header = Buffer.alloc(CLUSTER_HEADER_BYTES);
  header.writeUInt32BE(ID.Cluster, 0);
  sizeField(size, 8).copy(header, 4);
  header[12] = ID.Timecode;
  header[13] = 0x88;
  header.writeBigUInt64BE(BigInt(timecode), 14);
  return [header, ...blocks];
}

/**
 * What finishes a recording whose clusters end at `end`: the Cues to append there, and
 * the SeekHead, Info with Duration and Segment size to write in place.
 */
export function finishRecording(layout: RecordingLayout, cues: readonly CueEntry[], durationTicks: number, end: number): FinishedTail {
  const rel = (offset: number) => offset - layout.segmentDataStart;
  const points = cues.map((cue) =>
    element(ID.CuePoint, [
      uintElement(ID.CueTime, cue.timecode),
      element(ID.CueTrackPositions, [uintElement(ID.CueTrack, layout.cueTrack), uintElement(ID.CueClusterPosition, rel(cue.offset))]),
    ]),
  );
  // A Cues element with no CuePoint is invalid: a recording without a keyframe gets none.
  const tail = points.length > 0 ? element(ID.Cues, points, 8) : Buffer.alloc(0);
  const seek = (id: number, offset: number) => element(ID.Seek, [element(ID.SeekID, idBytes(id)), uintElement(ID.SeekPosition, rel(offset), 8)]);
  const seeks = [seek(ID.Info, layout.infoOffset), seek(ID.Tracks, layout.tracksOffset)];
  if (tail.length > 0) seeks.push(seek(ID.Cues, end));
  const seekHead = element(ID.SeekHead, seeks);
  const reserve = Buffer.concat([seekHead, voidElement(layout.reserveLength - seekHead.length)]);
  const info = element(ID.Info, [layout.infoBody, floatElement(ID.Duration, durationTicks)], 8);
  if (info.length !== layout.infoSpan) throw new Error(`Info with Duration takes ${info.length} bytes, ${layout.infoSpan} were kept`);
  const segmentSize = sizeField(end + tail.length - layout.segmentDataStart, 8);
  return {
    at: end,
    tail,
    patches: [
      { offset: layout.reserveOffset, bytes: reserve },
      { offset: layout.infoOffset, bytes: info },
      { offset: layout.segmentOffset + 4, bytes: segmentSize },
    ],
  };
}

/**
 * Reads the layout of a recording from its first bytes (enough to hold everything
 * before the first Cluster; 64 KiB is plenty). Null for a file this writer did not make.
 */
export function readLayout(head: Buffer): RecordingLayout | null {
  if (head.length < 8 || readId(head, 0, 4) !== ID.EBML) return null;
  const ebmlSizeLength = vintLength(head[4]);
  if (ebmlSizeLength === 0) return null;
  const ebmlEnd = 4 + ebmlSizeLength + readSize(head, 4, ebmlSizeLength);
  const segmentOffset = ebmlEnd;
  if (head.length < segmentOffset + 12 || readId(head, segmentOffset, 4) !== ID.Segment || head[segmentOffset + 4] !== 0x01) return null;
  const finished = readSize(head, segmentOffset + 4, 8) !== UNKNOWN_SIZE;
  const segmentDataStart = segmentOffset + 12;
  let infoOffset = -1;
  let infoEnd = -1;
  let tracksOffset = -1;
  let firstClusterOffset = -1;
  let info: Buffer | null = null;
  let tracks: Buffer | null = null;
  let pos = segmentDataStart;
  while (pos + 12 <= head.length) {
    const idLength = vintLength(head[pos]);
    if (idLength === 0 || idLength > 4) return null;
    const id = readId(head, pos, idLength);
    if (id === ID.Cluster) {
      firstClusterOffset = pos;
      break;
    }
    const sizeLength = vintLength(head[pos + idLength]);
    if (sizeLength === 0) return null;
    const size = readSize(head, pos + idLength, sizeLength);
    if (size === UNKNOWN_SIZE) return null;
    const end = pos + idLength + sizeLength + size;
    if (end > head.length) return null;
    if (id === ID.Info) {
      infoOffset = pos;
      info = head.subarray(pos, end);
    } else if (id === ID.Tracks) {
      tracksOffset = pos;
      tracks = head.subarray(pos, end);
      if (infoEnd < 0) infoEnd = pos;
    }
    pos = end;
  }
  if (!info || !tracks || firstClusterOffset < 0 || infoOffset < segmentDataStart) return null;
  const infoBytes: Buffer = info;
  let startMs: number | null = null;
  let durationTicks: number | null = null;
  forEachChild(infoBytes, bodyStart(infoBytes), infoBytes.length, (id, s, e) => {
    if (id === ID.DateUTC && e - s === 8) startMs = Number(infoBytes.readBigInt64BE(s) / 1_000_000n) + MATROSKA_EPOCH_MS;
    else if (id === ID.Duration && e - s === 8) durationTicks = infoBytes.readDoubleBE(s);
    else if (id === ID.Duration && e - s === 4) durationTicks = infoBytes.readFloatBE(s);
  });
  const trackBytes: Buffer = tracks;
  const trackList = parseTracks(trackBytes, bodyStart(trackBytes), trackBytes.length);
  let cuesOffset: number | null = null;
  if (finished) {
    forEachChild(head, segmentDataStart, infoOffset, (id, s, e) => {
      if (id !== ID.SeekHead) return;
      forEachChild(head, s, e, (seek, ss, se) => {
        if (seek !== ID.Seek) return;
        let target = -1;
        let position = -1;
        forEachChild(head, ss, se, (child, cs, ce) => {
          if (child === ID.SeekID) target = readUint(head, cs, ce);
          else if (child === ID.SeekPosition) position = readUint(head, cs, ce);
        });
        if (target === ID.Cues && position >= 0) cuesOffset = segmentDataStart + position;
      });
    });
  }
  return {
    segmentOffset,
    segmentDataStart,
    reserveOffset: segmentDataStart,
    reserveLength: infoOffset - segmentDataStart,
    infoOffset,
    infoBody: infoBodyOf(infoBytes, [ID.Duration]),
    infoSpan: infoEnd - infoOffset,
    tracksOffset,
    firstClusterOffset,
    timecodeScale: parseTimecodeScale(infoBytes, bodyStart(infoBytes), infoBytes.length),
    tracks: trackList,
    ebml: Buffer.from(head.subarray(0, ebmlEnd)),
    tracksElement: Buffer.from(trackBytes),
    cueTrack: cueTrackOf(trackList),
    startMs,
    durationTicks,
    finished,
    cuesOffset,
  };
}

/** An init segment (EBML header, live Segment, Info, Tracks) for a new file cut from recordings of this layout. */
export function initOf(layout: RecordingLayout): Buffer {
  return Buffer.concat([layout.ebml, idBytes(ID.Segment), UNKNOWN_SIZE_FIELD, element(ID.Info, layout.infoBody), layout.tracksElement]);
}

/** The (timecode, cluster offset) pairs of a Cues element's payload, for `track`. */
export function parseCues(cues: Buffer, segmentDataStart: number): CueEntry[] {
  const out: CueEntry[] = [];
  forEachChild(cues, 0, cues.length, (id, s, e) => {
    if (id !== ID.CuePoint) return;
    let timecode = -1;
    let position = -1;
    forEachChild(cues, s, e, (child, cs, ce) => {
      if (child === ID.CueTime) timecode = readUint(cues, cs, ce);
      else if (child === ID.CueTrackPositions && position < 0) {
        forEachChild(cues, cs, ce, (p, ps, pe) => {
          if (p === ID.CueClusterPosition) position = readUint(cues, ps, pe);
        });
      }
    });
    if (timecode >= 0 && position >= 0) out.push({ timecode, offset: segmentDataStart + position });
  });
  return out;
}

/** A cluster's place in a file, read from its header. */
export interface ClusterHeader {
  offset: number;
  /** Where its blocks start (after ID, size and Timecode). */
  blocksOffset: number;
  /** Where it ends. */
  end: number;
  timecode: number;
}

/**
 * Reads a cluster header at the start of `bytes` (at least 32 bytes of the file at
 * `offset`, fewer at its end). Null when there is no complete-looking known-size Cluster.
 */
export function readClusterHeader(bytes: Buffer, offset: number): ClusterHeader | null {
  if (bytes.length < 6 || readId(bytes, 0, Math.min(4, vintLength(bytes[0]) || 1)) !== ID.Cluster) return null;
  const sizeLength = vintLength(bytes[4]);
  if (sizeLength === 0 || bytes.length < 4 + sizeLength + 3) return null;
  const size = readSize(bytes, 4, sizeLength);
  if (size === UNKNOWN_SIZE) return null;
  const dataStart = 4 + sizeLength;
  let timecode = -1;
  let blocksOffset = dataStart;
  // The Timecode comes first in every cluster this writer makes; others may put it later.
  const idLength = vintLength(bytes[dataStart]);
  if (idLength === 1 && bytes[dataStart] === ID.Timecode) {
    const tcSizeLength = vintLength(bytes[dataStart + 1]);
    const tcSize = readSize(bytes, dataStart + 1, tcSizeLength);
    const tcStart = dataStart + 1 + tcSizeLength;
    if (tcSizeLength === 0 || tcStart + tcSize > bytes.length) return null;
    timecode = readUint(bytes, tcStart, tcStart + tcSize);
    blocksOffset = tcStart + tcSize;
  }
  if (timecode < 0) return null;
  return { offset, blocksOffset: offset + blocksOffset, end: offset + dataStart + size, timecode };
}
