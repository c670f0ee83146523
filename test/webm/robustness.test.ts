/**
 * The splitter on broken input: truncated, random and bit-flipped versions of a real
 * GStreamer stream, and absurd sizes. Whatever arrives, feed()/end() must not throw,
 * must not hang, must end with exactly one terminal event (a coded error with its byte
 * offset, or end), and must not hold more than the limits allow.
 *
 * The cases run in a worker thread watched from here, because an endless loop in a
 * synchronous parser would also stop mocha's own timeout. Every case has its own
 * seed, derived from a base seed; a failure prints both. The run is deterministic for
 * a base seed: SPLITTER_FUZZ_SEED=<base> replays it, another base explores new cases.
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { runInNewContext } from 'node:vm';
import v8 from 'node:v8';
import { expect } from 'chai';
import { WebmSplitter, type SplitterLimits } from '../../src/webm/splitter.js';
import {
  cluster,
  IDS,
  idBytes,
  prng,
  simpleBlock,
  split,
  streamHeader,
  uintEl,
  unknownEl,
  vint,
  walkElements,
  type SplitEvent,
} from '../helpers/ebml-builder.js';
import { gstWebm } from '../helpers/media.js';

const CODES = new Set(['NOT_WEBM', 'INVALID_ID', 'INVALID_SIZE', 'HEADER_TOO_LARGE', 'ELEMENT_TOO_LARGE', 'UNKNOWN_SIZE', 'NO_TRACKS', 'BAD_BLOCK', 'CLUSTER_OVERRUN', 'TRUNCATED']);
const LIMITS: SplitterLimits = { maxElementSize: 256 << 10, maxHeaderSize: 64 << 10 };

/** 'endless-loop' exists to prove the watchdog catches a real hang. */
type Family = 'truncate' | 'random' | 'bitflip' | 'huge-size' | 'endless-loop';
interface Job {
  family: Family;
  stream: Uint8Array;
  /** The run's base seed; case i of this job uses seed + i. */
  baseSeed: number;
  seed: number;
  cases: number;
}
type Report = { starting: number; seed: number } | { failure: string } | { done: number };

/** Checks what must hold for any input; returns the events. Throws with `label` on a violation. */
function checkInvariants(input: Buffer, chunking: number | (() => number), label: string): SplitEvent[] {
  const { events, thrown } = split(input, chunking, LIMITS);
  const fail = (why: string) => {
    throw new Error(`${label}: ${why}; last events ${JSON.stringify(events.slice(-2), (k, v) => (k === 'bytes' || k === 'header' ? undefined : v))}`);
  };
  if (thrown !== undefined) fail(`feed()/end() threw ${String(thrown)}`);
  const terminals = events.filter((e) => e.type === 'end' || e.type === 'error');
  if (terminals.length !== 1 || events[events.length - 1] !== terminals[0]) fail(`${terminals.length} terminal events, last not terminal`);
  const last = terminals[0];
  if (last.type === 'error') {
    if (!CODES.has(last.code)) fail(`unknown error code ${last.code}`);
    if (!Number.isInteger(last.offset) || last.offset < 0 || last.offset > input.length) fail(`error offset ${last.offset} outside the input`);
    if (!last.message.includes(`at byte ${last.offset}`)) fail(`message "${last.message}" does not give the offset`);
  }
  for (const e of events) {
    if (e.type === 'block') {
      if (e.size > LIMITS.maxElementSize + 12) fail(`block of ${e.size} bytes past the limit`);
      if (!e.bytes.equals(input.subarray(e.offset, e.offset + e.size))) fail(`block at ${e.offset} is not the input's bytes there`);
    } else if (e.type === 'header') {
      if (e.bytes.length > LIMITS.maxHeaderSize) fail(`header of ${e.bytes.length} bytes past the limit`);
      if (!e.bytes.equals(input.subarray(e.offset, e.offset + e.bytes.length))) fail(`header at ${e.offset} is not the input's bytes there`);
    }
  }
  return events;
}

/** Strips buffers, so event lists compare quickly. */
const brief = (e: SplitEvent) => (e.type === 'block' ? `b${e.offset}:${e.size}:${e.track}:${e.timecode}:${e.keyframe}` : e.type === 'header' ? `h${e.offset}:${e.bytes.length}` : e.type === 'cluster' ? `c${e.offset}:${e.timecode}` : e.type);

function randomChunking(random: () => number): () => number {
  return () => 1 + Math.floor(random() ** 2 * 4000);
}

/** Runs one family of cases; reports progress so the main thread can tell a hang. */
function runJob(job: Job, report: (r: Report) => void): void {
  const stream = Buffer.from(job.stream.buffer, job.stream.byteOffset, job.stream.byteLength);
  const fields = walkElements(stream);
  const full = checkInvariants(stream, 1400, 'whole stream').map(brief);
  for (let i = 0; i < job.cases; i++) {
    const seed = job.seed + i;
    const random = prng(seed);
    const label = `${job.family} case ${i}, seed ${seed} (replay: SPLITTER_FUZZ_SEED=${job.baseSeed})`;
    report({ starting: i, seed });
    try {
      switch (job.family) {
        case 'endless-loop':
          for (;;);
        case 'truncate': {
          // Cut every (length/cases)-th byte, plus a seeded jitter so cuts land in every kind of field.
          const step = Math.ceil(stream.length / job.cases);
          const cut = Math.min(stream.length, i * step + Math.floor(random() * step));
          const events = checkInvariants(stream.subarray(0, cut), randomChunking(random), label);
          const got = events.slice(0, -1).map(brief);
          // Cutting the stream may not change anything reported before the cut.
          if (got.join() !== full.slice(0, got.length).join()) throw new Error(`${label}: events before the cut at ${cut} differ`);
          const last = events[events.length - 1];
          const atBoundary = last.type === 'end';
          if (cut < stream.length && atBoundary && !fields.some((f) => f.offset === cut)) {
            throw new Error(`${label}: stream cut inside an element at ${cut} ended without TRUNCATED`);
          }
          break;
        }
        case 'random': {
          const noise = Buffer.from(Array.from({ length: Math.floor(random() * 3000) }, () => Math.floor(random() * 256)));
          // Half the cases start with a real header, so the noise reaches the cluster parser.
          const prefixLength = random() < 0.5 ? fields.find((f) => f.id === IDS.Cluster)!.offset + Math.floor(random() * 40) : 0;
          checkInvariants(Buffer.concat([stream.subarray(0, prefixLength), noise]), randomChunking(random), label);
          break;
        }
        case 'bitflip': {
          const input = Buffer.from(stream);
          const flips = 1 + Math.floor(random() * 3);
          for (let f = 0; f < flips; f++) {
            const field = fields[Math.floor(random() * fields.length)];
            const at = field.offset + Math.floor(random() * (field.idLength + field.sizeLength));
            input[at] ^= 1 << Math.floor(random() * 8);
          }
          checkInvariants(input, randomChunking(random), label);
          break;
        }
        case 'huge-size': {
          // Rewrite one element's size as 2^50 (in 8 bytes).
          const field = fields[Math.floor(random() * fields.length)];
          const input = Buffer.concat([
            stream.subarray(0, field.offset + field.idLength),
            vint(2 ** 50, 8),
            stream.subarray(field.dataStart),
          ]);
          const events = checkInvariants(input, randomChunking(random), label);
          const last = events[events.length - 1];
          const isBlock = field.id === IDS.SimpleBlock || field.id === IDS.BlockGroup;
          if (isBlock && !(last.type === 'error' && last.offset <= field.offset)) {
            throw new Error(`${label}: a ${field.id.toString(16)} of 2^50 bytes at ${field.offset} was not refused there: ${brief(last)}`);
          }
          break;
        }
      }
    } catch (e) {
      report({ failure: e instanceof Error ? e.message : String(e) });
      return;
    }
  }
  report({ done: job.cases });
}

if (!isMainThread && parentPort) {
  const port = parentPort;
  runJob(workerData as Job, (r) => port.postMessage(r));
}

/** Runs a job in a worker; fails if any case fails or no progress comes for `stallMs`. */
function inWorker(job: Job, stallMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: job });
    let current = 'before the first case';
    let timer = setTimeout(stalled, stallMs);
    function stalled() {
      void worker.terminate();
      reject(new Error(`${job.family}: no progress for ${stallMs} ms in ${current} (replay: SPLITTER_FUZZ_SEED=${job.baseSeed}): a hang`));
    }
    worker.on('message', (r: Report) => {
      clearTimeout(timer);
      if ('failure' in r) {
        void worker.terminate();
        reject(new Error(r.failure));
      } else if ('done' in r) {
        void worker.terminate();
        resolve();
      } else {
        current = `case ${r.starting}, seed ${r.seed}`;
        timer = setTimeout(stalled, stallMs);
      }
    });
    worker.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

if (isMainThread) {
  describe('WebmSplitter robustness', function () {
    this.timeout(120_000);
    const baseSeed = Number(process.env.SPLITTER_FUZZ_SEED ?? 20240611);
    let stream: Buffer;

    before(() => {
      stream = gstWebm({ videoCodec: 'vp8', audioCodec: 'opus', seconds: 2, width: 320, height: 240, bitrate: 400 }).bytes;
      expect(stream.length).to.be.above(20_000);
    });

    const job = (family: Family, cases: number, seedOffset: number): Job => ({ family, stream, baseSeed, seed: baseSeed + seedOffset, cases });

    it('handles the stream cut at 1500 points: earlier events unchanged, then end or TRUNCATED', () => inWorker(job('truncate', 1500, 0)));
    it('handles 3000 random inputs, bare or after a real header', () => inWorker(job('random', 3000, 100_000)));
    it('handles 3000 streams with bits flipped in element IDs and sizes', () => inWorker(job('bitflip', 3000, 200_000)));
    it('refuses 500 elements whose size is rewritten to 2^50, at the element', () => inWorker(job('huge-size', 500, 300_000)));

    it('reports a hang as a failure (the watchdog itself works)', async () => {
      let error: unknown;
      try {
        await inWorker(job('endless-loop', 1, 0), 1000);
      } catch (e) {
        error = e;
      }
      expect(String(error)).to.match(/endless-loop: no progress for 1000 ms in case 0, seed \d+/);
    });

    it('reports exactly one terminal event, and ignores input and end() after it', () => {
      const events: string[] = [];
      const splitter = new WebmSplitter({
        header: () => events.push('header'),
        cluster: () => events.push('cluster'),
        block: () => events.push('block'),
        end: () => events.push('end'),
        error: (e) => events.push(`error ${e.code}`),
      });
      splitter.feed(Buffer.from([0x00, 0x01, 0x02]));
      splitter.feed(stream);
      splitter.end();
      splitter.end();
      expect(events).to.deep.equal(['error INVALID_ID']);
      expect(splitter.ended).to.equal(true);
    });

    it('holds no more than maxElementSize plus a chunk, however much is fed', async () => {
      v8.setFlagsFromString('--expose-gc');
      const gc = runInNewContext('gc') as () => void;
      const maxElementSize = 1 << 20;
      const chunkSize = 64 << 10;
      // Large blocks just under the limit, large skipped elements, small blocks,
      // repeated in fresh chunks: 48 MiB in all.
      const head = Buffer.concat([streamHeader(), unknownEl(IDS.Cluster, 8), uintEl(IDS.Timecode, 0)]);
      const unit = Buffer.concat([
        simpleBlock({ track: 1, relative: 0, frames: [Buffer.alloc(maxElementSize - 20, 1)] }),
        Buffer.concat([idBytes(IDS.Void), vint(maxElementSize - 20, 8), Buffer.alloc(maxElementSize - 20)]),
        ...Array.from({ length: 200 }, (_, i) => simpleBlock({ track: 2, relative: i, frames: [Buffer.alloc(300)] })),
        cluster(1, [], 8),
      ]);
      let blocks = 0;
      let error: string | undefined;
      const splitter = new WebmSplitter(
        { header() {}, cluster() {}, block: () => void blocks++, end() {}, error: (e) => (error = e.message) },
        { maxElementSize },
      );
      // Every chunk fed gets its own ArrayBuffer; the splitter holds one as long as any
      // slice of it is alive. Weak references tell, after a GC, which ones it still holds.
      let fed: WeakRef<ArrayBuffer>[] = [];
      const feedFresh = (bytes: Buffer) => {
        for (let pos = 0; pos < bytes.length; pos += chunkSize) {
          const chunk = new Uint8Array(bytes.subarray(pos, pos + chunkSize));
          fed.push(new WeakRef(chunk.buffer));
          splitter.feed(Buffer.from(chunk.buffer));
        }
      };
      const held = async () => {
        // WeakRefs made or read in this job stay alive until it ends.
        await new Promise((resolve) => setImmediate(resolve));
        gc();
        fed = fed.filter((ref) => ref.deref() !== undefined);
        return fed.reduce((sum, ref) => sum + (ref.deref()?.byteLength ?? 0), 0);
      };
      let peak = 0;
      feedFresh(head);
      for (let round = 0; round < 20; round++) {
        feedFresh(unit);
        peak = Math.max(peak, await held());
      }
      // A block cut short at the end: the splitter holds it while waiting for the rest.
      feedFresh(simpleBlock({ track: 1, relative: 0, frames: [Buffer.alloc(maxElementSize - 20)] }).subarray(0, maxElementSize - 100));
      const atEnd = await held();
      expect(error).to.equal(undefined);
      expect(blocks).to.equal(20 * 201);
      expect(atEnd, 'an unfinished block is held').to.be.above(maxElementSize - 2 * chunkSize);
      expect(Math.max(peak, atEnd), 'bytes held').to.be.at.most(maxElementSize + 2 * chunkSize);
    });
  });
}
