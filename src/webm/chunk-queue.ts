/**
 * The bytes received but not yet parsed, kept as the list of chunks they arrived in.
 * Reading hands out slices of those chunks, so frame data is never copied; only the
 * few bytes of an element header that straddle two chunks are gathered.
 */
export class ChunkQueue {
  private chunks: Buffer[] = [];
  /** Bytes buffered. */
  length = 0;

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The byte at `index` (which must be < length). */
  byteAt(index: number): number {
    let i = index;
    for (const chunk of this.chunks) {
      if (i < chunk.length) return chunk[i];
      i -= chunk.length;
    }
    throw new RangeError(`byteAt(${index}) past ${this.length} buffered bytes`);
  }

  /**
   * The first `n` bytes (n <= length) in one contiguous buffer without consuming them:
   * a slice when they sit in the first chunk (the usual case), else a small copy.
   */
  peek(n: number): Buffer {
    const first = this.chunks[0];
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    for (const chunk of this.chunks) {
      const take = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, take);
      filled += take;
      if (filled === n) break;
    }
    return out;
  }

  /** Consumes `n` bytes (n <= length) and returns them as slices of the received chunks. */
  take(n: number): Buffer[] {
    const parts: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const chunk = this.chunks[0];
      if (chunk.length <= left) {
        parts.push(chunk);
        this.chunks.shift();
        left -= chunk.length;
      } else {
        parts.push(chunk.subarray(0, left));
        this.chunks[0] = chunk.subarray(left);
        left = 0;
      }
    }
    this.length -= n;
    return parts;
  }

  /** Drops up to `n` bytes; returns how many were dropped. */
  skip(n: number): number {
    let left = Math.min(n, this.length);
    const dropped = left;
    while (left > 0) {
      const chunk = this.chunks[0];
      if (chunk.length <= left) {
        this.chunks.shift();
        left -= chunk.length;
      } else {
        this.chunks[0] = chunk.subarray(left);
        left = 0;
      }
    }
    this.length -= dropped;
    return dropped;
  }

  clear(): void {
    this.chunks = [];
    this.length = 0;
  }
}

/** Joins slices into one buffer; no copy when there is only one. */
export function joinParts(parts: readonly Buffer[]): Buffer {
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}
