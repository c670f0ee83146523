import type { WebmBlock } from '../webm/splitter.js';
import { ID } from '../webm/ids.js';
import { readId, readSize, sizeLength, UNKNOWN_SIZE, vintLength, writeSize } from '../webm/vint.js';

/** SimpleBlock flags: keyframe and discardable exist only there; a Block's are reserved (0). */
const SIMPLE_KEYFRAME = 0x80;
const SIMPLE_ONLY_FLAGS = 0x81;

/**
 * A block written again with a new relative timecode. Only the bytes up to the flags
 * byte are copied; the frame data stays a slice of what the producer sent.
 * `setKeyframe`: set the SimpleBlock keyframe flag (every Opus and Vorbis frame is one,
 * and players such as mpv call a stream broken when audio frames lack it).
 */
export function rewriteBlock(block: WebmBlock, relative: number, setKeyframe = false): Buffer[] {
  const headLength = block.timecodeOffset + 3;
  const [head, rest] = splitHead(block.parts, headLength);
  head.writeInt16BE(relative, block.timecodeOffset);
  if (setKeyframe && block.kind === 'simple') head[headLength - 1] |= SIMPLE_KEYFRAME;
  return [head, ...rest];
}

/**
 * A frame as a BlockGroup with a BlockDuration, so a browser's MSE never has to guess how
 * long it lasts. A video frame's duration reaches the next frame: a gap of more than two
 * frame durations is a discontinuity, and everything up to the next keyframe is dropped (a
 * hole in `buffered`). An audio frame's is its own length, read from the codec's packet.
 * A frame that is not a keyframe gets a ReferenceBlock pointing at the previous frame
 * (`referenceTicks` back), which is how a BlockGroup says "not a keyframe"; with
 * `referenceTicks` null it is one.
 */
export function blockGroup(block: WebmBlock, relative: number, durationTicks: number, referenceTicks: number | null): Buffer[] {
  let blockBodyStart: number;
  let blockBodyEnd: number;
  let parts = block.parts;
  if (block.kind === 'simple') {
    blockBodyStart = 1 + vintLength(byteAt(parts, 1));
    blockBodyEnd = block.size;
  } else {
    // Rare (GStreamer and ffmpeg write SimpleBlocks for video): copy the group to find its Block.
    const whole = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    parts = [whole];
    const found = findChild(whole, ID.Block);
    if (!found) return rewriteBlock(block, relative);
    [blockBodyStart, blockBodyEnd] = found;
  }
  const flagsAt = block.timecodeOffset + 2;
  const frame = sliceParts(parts, flagsAt + 1, blockBodyEnd);
  const frameLength = blockBodyEnd - flagsAt - 1;
  const duration = Math.max(1, Math.round(durationTicks));
  const reference = referenceTicks === null ? null : -Math.max(1, Math.round(referenceTicks));

  // One Buffer before the frame and one after it, written in place: this runs for every
  // video frame of every stream, and small Buffers are dear to allocate.
  // Before: BlockGroup ID and size, Block ID and size, then the Block's head as the
  // producer wrote it (track number) with the new relative timecode and Block flags.
  const blockHeadLength = flagsAt + 1 - blockBodyStart;
  const blockSize = blockHeadLength + frameLength;
  const durationLength = uintLength(duration);
  const referenceLength = reference === null ? 0 : intLength(reference);
  const tail = Buffer.allocUnsafe(2 + durationLength + (reference === null ? 0 : 2 + referenceLength));
  const blockSizeLength = sizeLength(blockSize);
  const groupSize = 1 + blockSizeLength + blockSize + tail.length;
  const groupSizeLength = sizeLength(groupSize);
  const head = Buffer.allocUnsafe(1 + groupSizeLength + 1 + blockSizeLength + blockHeadLength);
  head[0] = ID.BlockGroup;
  writeSize(head, 1, groupSize, groupSizeLength);
  head[1 + groupSizeLength] = ID.Block;
  writeSize(head, 2 + groupSizeLength, blockSize, blockSizeLength);
  copyRange(parts, blockBodyStart, flagsAt + 1, head, head.length - blockHeadLength);
  head.writeInt16BE(relative, head.length - 3);
  head[head.length - 1] &= ~SIMPLE_ONLY_FLAGS & 0xff;

  // After: BlockDuration, and for a frame that is not a keyframe its ReferenceBlock.
  tail[0] = ID.BlockDuration;
  tail[1] = 0x80 | durationLength;
  tail.writeUIntBE(duration, 2, durationLength);
  if (reference !== null) {
    const at = 2 + durationLength;
    tail[at] = ID.ReferenceBlock;
    tail[at + 1] = 0x80 | referenceLength;
    tail.writeIntBE(reference, at + 2, referenceLength);
  }
  return [head, ...frame, tail];
}

/**
 * Byte `index` of the frame a SimpleBlock without lacing carries, or undefined past its
 * end (the block's data is still the producer's slices).
 */
export function frameByte(block: WebmBlock, index: number): number | undefined {
  const at = block.timecodeOffset + 3 + index;
  return at < block.size ? byteAt(block.parts, at) : undefined;
}

/** Total bytes of a list of slices. */
export function partsLength(parts: readonly Buffer[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}

function splitHead(parts: readonly Buffer[], headLength: number): [Buffer, Buffer[]] {
  const head = Buffer.allocUnsafe(headLength);
  copyRange(parts, 0, headLength, head);
  return [head, sliceParts(parts, headLength, partsLength(parts))];
}

function byteAt(parts: readonly Buffer[], index: number): number {
  let i = index;
  for (const part of parts) {
    if (i < part.length) return part[i];
    i -= part.length;
  }
  return 0;
}

/** Copies bytes [start, end) of the slices into `target`, from `targetStart` on. */
function copyRange(parts: readonly Buffer[], start: number, end: number, target: Buffer, targetStart = 0): void {
  let base = 0;
  let written = targetStart;
  for (const part of parts) {
    const from = Math.max(start - base, 0);
    const to = Math.min(end - base, part.length);
    if (from < to) written += part.copy(target, written, from, to);
    base += part.length;
    if (base >= end) break;
  }
}

/** Bytes [start, end) of the slices, as views (no copy). */
function sliceParts(parts: readonly Buffer[], start: number, end: number): Buffer[] {
  const out: Buffer[] = [];
  let base = 0;
  for (const part of parts) {
    const from = Math.max(start - base, 0);
    const to = Math.min(end - base, part.length);
    if (from < to) out.push(from === 0 && to === part.length ? part : part.subarray(from, to));
    base += part.length;
    if (base >= end) break;
  }
  return out;
}

/** [dataStart, dataEnd) of the first child with `id` inside a BlockGroup element. */
function findChild(group: Buffer, id: number): [number, number] | null {
  let pos = 1 + vintLength(group[1]);
  while (pos < group.length) {
    const idLength = vintLength(group[pos]);
    if (idLength === 0 || idLength > 4) return null;
    const childId = readId(group, pos, idLength);
    const sizeAt = pos + idLength;
    const sizeBytes = vintLength(group[sizeAt]);
    if (sizeBytes === 0) return null;
    const size = readSize(group, sizeAt, sizeBytes);
    const dataStart = sizeAt + sizeBytes;
    const dataEnd = dataStart + size;
    if (size === UNKNOWN_SIZE || dataEnd > group.length) return null;
    if (childId === id) return [dataStart, dataEnd];
    pos = dataEnd;
  }
  return null;
}

/** Bytes of an unsigned integer element's value (1-6: Buffer writes no more). */
function uintLength(value: number): number {
  let length = 1;
  while (length < 6 && value >= 2 ** (8 * length)) length++;
  return length;
}

/** Bytes of a signed integer element's value: 1, 2 or 4. */
function intLength(value: number): number {
  return value >= -0x80 && value < 0x80 ? 1 : value >= -0x8000 && value < 0x8000 ? 2 : 4;
}

/**
 * A keyframe SimpleBlock made here rather than received (the silence that fills a hole
 * in an audio track), in the shape the splitter gives received blocks.
 */
export function madeBlock(track: number, timecode: number, frame: Buffer): WebmBlock {
  const trackLength = sizeLength(track);
  const bodyLength = trackLength + 3 + frame.length;
  const sizeBytes = sizeLength(bodyLength);
  const element = Buffer.allocUnsafe(1 + sizeBytes + bodyLength);
  element[0] = ID.SimpleBlock;
  writeSize(element, 1, bodyLength, sizeBytes);
  const timecodeOffset = 1 + sizeBytes + trackLength;
  writeSize(element, 1 + sizeBytes, track, trackLength);
  element.writeInt16BE(0, timecodeOffset);
  element[timecodeOffset + 2] = SIMPLE_KEYFRAME;
  frame.copy(element, timecodeOffset + 3);
  return { kind: 'simple', track, timecode, keyframe: true, lacing: 'none', parts: [element], size: element.length, timecodeOffset, offset: -1 };
}
