/** EBML variable-length integers ("vints"), read from and written to plain buffers. */

/** Length in bytes of a vint from its first byte, or 0 when the first byte is 0 (invalid). */
export function vintLength(firstByte: number): number {
  return firstByte === 0 ? 0 : Math.clz32(firstByte) - 23;
}

/** Sentinel for an all-ones size field: the element's size is unknown (live streams). */
export const UNKNOWN_SIZE = -1;

/**
 * Reads an element size at `pos`: the value with the length marker removed, or
 * UNKNOWN_SIZE when every value bit is set. Sizes above 2^53 lose precision, which
 * does not matter: they are far past any limit and rejected.
 */
export function readSize(buf: Uint8Array, pos: number, length: number): number {
  let value = buf[pos] & (0xff >> length);
  let allOnes = value === 0xff >> length;
  for (let i = 1; i < length; i++) {
    const b = buf[pos + i];
    if (b !== 0xff) allOnes = false;
    value = value * 256 + b;
  }
  return allOnes ? UNKNOWN_SIZE : value;
}

/** Reads an element ID (marker kept) of `length` bytes at `pos`. */
export function readId(buf: Uint8Array, pos: number, length: number): number {
  let id = 0;
  for (let i = 0; i < length; i++) id = id * 256 + buf[pos + i];
  return id;
}

/** Reads an unsigned big-endian integer of up to 8 bytes (precision past 2^53 is lost). */
export function readUint(buf: Uint8Array, start: number, end: number): number {
  let value = 0;
  for (let i = start; i < end; i++) value = value * 256 + buf[i];
  return value;
}

/** Encodes an element ID (marker already part of the value) as its wire bytes. */
export function encodeId(id: number): Buffer {
  const length = id > 0xffffff ? 4 : id > 0xffff ? 3 : id > 0xff ? 2 : 1;
  const out = Buffer.allocUnsafe(length);
  for (let i = length - 1, v = id; i >= 0; i--, v = Math.floor(v / 256)) out[i] = v & 0xff;
  return out;
}

/** Encodes a size as a vint of the shortest length that can hold it (never all-ones). */
export function encodeSize(size: number): Buffer {
  let length = 1;
  while (length < 8 && size >= 2 ** (7 * length) - 1) length++;
  const out = Buffer.allocUnsafe(length);
  let v = size;
  for (let i = length - 1; i >= 0; i--) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  out[0] |= 0x80 >> (length - 1);
  return out;
}

/** Encodes a whole element: ID, size, payload. */
export function encodeElement(id: number, payload: Uint8Array): Buffer {
  return Buffer.concat([encodeId(id), encodeSize(payload.length), payload]);
}

/** Encodes an unsigned integer element with the fewest bytes (at least one). */
export function encodeUintElement(id: number, value: number): Buffer {
  const bytes: number[] = [];
  let v = value;
  do {
    bytes.unshift(v % 256);
    v = Math.floor(v / 256);
  } while (v > 0);
  return encodeElement(id, Uint8Array.from(bytes));
}
