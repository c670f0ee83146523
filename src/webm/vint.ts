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

/** Bytes of the shortest size field that holds `value` (all-ones is reserved for "unknown"). */
export function sizeLength(value: number): number {
  let length = 1;
  while (length < 8 && value >= 2 ** (7 * length) - 1) length++;
  return length;
}

/** Writes `value` as a size field of `length` bytes at `pos` (the caller checked that it fits). */
export function writeSize(buf: Uint8Array, pos: number, value: number, length: number): void {
  let v = value;
  for (let i = length - 1; i >= 0; i--) {
    buf[pos + i] = v % 256;
    v = Math.floor(v / 256);
  }
  buf[pos] |= 0x80 >> (length - 1);
}
