/**
 * Throughput of WebmSplitter against the npm `ebml` Decoder on the same real stream
 * (GStreamer VP8 + Opus, 640x360 at about 2 Mbit/s), fed in 1400-byte (a TCP segment)
 * and 64 KiB (a socket read) chunks. Run: npm run build && npm run bench.
 *
 * The stream is made once with gst-launch-1.0 and cached in the OS temp directory.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Decoder } from 'ebml';
import { WebmSplitter } from '../src/webm/splitter.js';
import { gstArgs } from '../test/helpers/media.js';

const SECONDS = 20;
const REPETITIONS = 5;
/** Each splitter measurement feeds the stream this long, at least, for a stable reading. */
const MIN_MEASURE_MS = 300;
const CHUNK_SIZES = [1400, 64 << 10];
const TARGET_MBPS = 1000;
const TARGET_RATIO = 50;

function benchStream(): Buffer {
  const file = path.join(os.tmpdir(), `webm-relay-bench-vp8-opus-640x360-${SECONDS}s.webm`);
  if (!existsSync(file)) {
    const partial = `${file}.${process.pid}.partial`;
    // A moving zone plate is costly enough to encode that vp8enc spends its whole bitrate.
    const pattern = 'zone-plate kx2=20 ky2=20 kt=1';
    const options = { videoCodec: 'vp8', audioCodec: 'opus', seconds: SECONDS, width: 640, height: 360, bitrate: 2000, pattern } as const;
    execFileSync('gst-launch-1.0', gstArgs(options, partial), { stdio: 'inherit' });
    renameSync(partial, file);
  }
  return readFileSync(file);
}

function chunked(bytes: Buffer, size: number): Buffer[] {
  const chunks: Buffer[] = [];
  for (let pos = 0; pos < bytes.length; pos += size) chunks.push(bytes.subarray(pos, pos + size));
  return chunks;
}

interface Pass {
  bytes: number;
  ms: number;
  /** Blocks found in one pass over the stream. */
  blocks: number;
}

/** Feeds the stream through fresh splitters until MIN_MEASURE_MS have passed. */
function splitterPass(chunks: Buffer[], total: number): Pass {
  let blocks = 0;
  let failure: Error | undefined;
  const handler = {
    header() {},
    cluster() {},
    block() {
      blocks++;
    },
    end() {},
    error(e: Error) {
      failure = e;
    },
  };
  let bytes = 0;
  let passes = 0;
  const start = performance.now();
  let ms = 0;
  do {
    passes++;
    const splitter = new WebmSplitter(handler);
    for (const chunk of chunks) splitter.feed(chunk);
    splitter.end();
    bytes += total;
    ms = performance.now() - start;
  } while (ms < MIN_MEASURE_MS);
  if (failure) throw failure;
  return { bytes, ms, blocks: blocks / passes };
}

/** One pass of the stream through the ebml Decoder (it is slow enough to time once). */
function ebmlPass(chunks: Buffer[], total: number): Pass {
  let blocks = 0;
  const decoder = new Decoder();
  decoder.on('data', (tag: [string, { name: string }]) => {
    if (tag[1].name === 'SimpleBlock') blocks++;
  });
  const start = performance.now();
  // The Decoder is a Transform stream: write() runs its parser synchronously.
  for (const chunk of chunks) decoder.write(chunk);
  const ms = performance.now() - start;
  decoder.removeAllListeners();
  return { bytes: total, ms, blocks };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const mbps = (p: Pass) => p.bytes / 1e6 / (p.ms / 1000);

function main(): void {
  const stream = benchStream();
  const cpus = os.cpus();
  console.log(`machine: ${cpus[0]?.model ?? 'unknown CPU'}, ${cpus.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB; node ${process.version}`);
  console.log(`stream: ${(stream.length / 1e6).toFixed(2)} MB, GStreamer VP8 + Opus 640x360 ${SECONDS} s (${((stream.length * 8) / SECONDS / 1e6).toFixed(2)} Mbit/s)`);
  console.log(`median of ${REPETITIONS} repetitions; MB/s = 10^6 bytes per second\n`);

  const rows: string[][] = [['chunk', 'WebmSplitter MB/s', 'ebml Decoder MB/s', 'ratio', 'blocks (splitter / ebml)']];
  const misses: string[] = [];
  for (const size of CHUNK_SIZES) {
    const chunks = chunked(stream, size);
    // Warm up both before timing, so the JIT has compiled the hot paths.
    splitterPass(chunks, stream.length);
    ebmlPass(chunks.slice(0, 200), Math.min(stream.length, 200 * size));
    const ours: Pass[] = [];
    const theirs: Pass[] = [];
    for (let r = 0; r < REPETITIONS; r++) {
      ours.push(splitterPass(chunks, stream.length));
      theirs.push(ebmlPass(chunks, stream.length));
    }
    const a = median(ours.map(mbps));
    const b = median(theirs.map(mbps));
    const ratio = a / b;
    rows.push([
      size === 1400 ? '1400 B' : `${size >> 10} KiB`,
      a.toFixed(0),
      b.toFixed(1),
      `${ratio.toFixed(0)}x`,
      `${ours[0].blocks} / ${theirs[0].blocks}`,
    ]);
    if (ratio < TARGET_RATIO) misses.push(`${size}-byte chunks: ${ratio.toFixed(0)}x the ebml Decoder, target ${TARGET_RATIO}x`);
    if (size === 64 << 10 && a < TARGET_MBPS) misses.push(`64 KiB chunks: ${a.toFixed(0)} MB/s, target ${TARGET_MBPS} MB/s`);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows) console.log(row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('   '));
  console.log(misses.length ? `\nMISSED: ${misses.join('; ')}` : `\ntargets met: >= ${TARGET_MBPS} MB/s at 64 KiB, >= ${TARGET_RATIO}x the ebml Decoder`);
}

main();
