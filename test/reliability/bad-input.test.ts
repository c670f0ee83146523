/**
 * Bad input on the producer side (--ingest tcp://): garbage, oversized headers and
 * elements, cut streams, bit-flipped real streams, a second producer. The relay must
 * never crash, keep its memory bounded, log each case, and serve the next valid
 * producer to viewers as a decodable stream.
 *
 * The bit-flip cases are seeded: RELIABILITY_SEED=<n> replays a run.
 */
import { expect } from 'chai';
import net from 'node:net';
import { recordEncoder } from '../helpers/record.js';
import { ffmpegErrors, trimToCompleteBlocks, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { WebmSplitter, type WebmBlock } from '../../src/webm/splitter.js';
import {
  gstProducer,
  HttpViewer,
  killTracked,
  logLines,
  prng,
  sendIngest,
  startTcpRelay,
  stopProcess,
  streamShape,
  vmRssKb,
  waitStats,
} from '../helpers/faults.js';

const MAX_HEADER = 64 << 10;
const MAX_ELEMENT = 1 << 20;
const FLIP_CASES = Number(process.env.RELIABILITY_FLIP_CASES ?? 600);

/** An EBML element: ID bytes, an 8-byte size, the body. */
function element(id: number[], size: number | bigint, body: Buffer = Buffer.alloc(0)): Buffer {
  const sizeField = Buffer.alloc(8);
  sizeField.writeBigUInt64BE(BigInt(size) | (1n << 56n));
  return Buffer.concat([Buffer.from(id), sizeField, body]);
}

describe('reliability: bad producer input', function () {
  this.timeout(120_000);
  let relay: RunningRelay;
  let ingestPort: number;
  let recording: Buffer;
  /**
   * Where the first Cluster starts: everything before is the header. The relay takes a
   * header when it sees the Cluster that follows, so "header first" sends 12 bytes more
   * (the Cluster ID and its unknown size).
   */
  let headerEnd: number;
  let blocks: { offset: number; size: number; timecodeOffset: number }[];
  /** The EBML header and the unknown-size Segment start: where the header's sections begin. */
  let segmentStart: number;
  let rssStartKb: number;

  before(async function () {
    this.timeout(150_000);
    recording = await recordEncoder(3, { videoBitrateKbps: 300 });
    blocks = [];
    let headerBytes = 0;
    const splitter = new WebmSplitter({
      header: (h) => {
        headerBytes = h.offset + h.bytes.length;
        segmentStart = h.ebml.length + 12;
      },
      cluster: () => {},
      block: (b: WebmBlock) => blocks.push({ offset: b.offset, size: b.size, timecodeOffset: b.timecodeOffset }),
      end: () => {},
      error: (e) => {
        throw e;
      },
    });
    splitter.feed(recording);
    headerEnd = headerBytes;
    expect(recording.readUInt32BE(segmentStart - 12).toString(16), 'Segment ID').to.equal('18538067');
    expect(recording[segmentStart - 8], 'unknown-size Segment').to.equal(0x01);
    expect(blocks.length).to.be.above(100);
    ({ relay, ingestPort } = await startTcpRelay([
      '--max-header-size', String(MAX_HEADER),
      '--max-element-size', String(MAX_ELEMENT),
      // A checking viewer starts at the next keyframe: never at a GOP cached from a bad producer.
      '--join', 'next-keyframe',
    ]));
    // Warm up with one valid producer, then take the memory baseline.
    await validProducerReachesViewers('warm-up');
    rssStartKb = vmRssKb(relay.process.pid!);
  });

  after(async () => {
    await killTracked();
    await relay?.stop('SIGKILL');
  });

  const relayOf = () => relay;
  const ingestPortOf = () => ingestPort;

  /** The relay is alive and serving. */
  async function expectServing(): Promise<void> {
    expect(relay.process.exitCode, `relay exited:\n${relay.log().slice(-3000)}`).to.equal(null);
    expect(relay.process.signalCode).to.equal(null);
    expect((await fetch(`${relay.url}/api/stats`)).status).to.equal(200);
  }

  /** The log lines about one producer connection (its local port names it). */
  const linesFor = (localPort: number) => logLines(relay.log(), new RegExp(`tcp 127\\.0\\.0\\.1:${localPort}: `));

  /**
   * Replays the recording as a producer: header first, then an HTTP viewer joins,
   * then the media at full speed. The viewer must get a clean, decodable stream.
   */
  async function validProducerReachesViewers(what: string, target?: { relay: RunningRelay; ingestPort: number }): Promise<void> {
    const { relay, ingestPort } = target ?? { relay: relayOf(), ingestPort: ingestPortOf() };
    const linesFor = (localPort: number) => logLines(relay.log(), new RegExp(`tcp 127\\.0\\.0\\.1:${localPort}: `));
    const socket = net.connect(ingestPort, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const localPort = socket.localPort!;
    socket.write(recording.subarray(0, headerEnd + 12));
    await waitFor(`${what}: the relay to take the valid header`, () => linesFor(localPort).some((l) => l.includes(': stream video/webm')), 10_000);
    const viewer = new HttpViewer(`${relay.url}/live.webm`);
    await waitFor(`${what}: viewer response`, () => viewer.status !== 0, 5000);
    expect(viewer.status).to.equal(200);
    socket.end(recording.subarray(headerEnd + 12));
    try {
      await waitFor(`${what}: 1.5 s of media at the viewer`, () => {
        const video = streamShape(trimToCompleteBlocks(viewer.body)).times.get(1) ?? [];
        return video.length > 0 && video[video.length - 1] - video[0] >= 1500;
      }, 10_000);
    } finally {
      viewer.close();
      socket.destroy();
    }
    const body = trimToCompleteBlocks(viewer.body);
    const shape = streamShape(body);
    expect(shape.headers, `${what}: headers`).to.equal(1);
    expect(shape.backwards, `${what}: timestamps`).to.deep.equal([]);
    expect(ffmpegErrors(body), `${what}: decode`).to.deep.equal([]);
    await waitStats(relay.url, `${what}: producer gone`, (s) => s.ingest.state === 'waiting');
  }

  it('random bytes: every connection is refused with a log line, the relay goes on', async () => {
    const seed = Number(process.env.RELIABILITY_SEED ?? Date.now() % 1e9);
    console.log(`      random-bytes seed ${seed}`);
    const random = prng(seed);
    for (let i = 0; i < 30; i++) {
      const bytes = Buffer.alloc(1 + Math.floor(random() * 65536));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256);
      // Half of them behind a valid EBML header and Segment start: garbage where the header goes on.
      const input = i % 2 === 0 ? bytes : Buffer.concat([recording.subarray(0, segmentStart), bytes]);
      // Pure garbage stays open until the relay closes it; the rest end their side (a plausible element may still be collecting).
      const result = await sendIngest(ingestPort, input, { end: i % 2 === 1, timeoutMs: 5000 });
      const lines = linesFor(result.localPort);
      if (i % 2 === 0) {
        expect(result.closedByPeer, `case ${i}: the relay closes a garbage producer`).to.equal(true);
        expect(lines.some((l) => / rejected: .*\[(NOT_WEBM|INVALID_ID|INVALID_SIZE)\]/.test(l)), `case ${i}:\n${lines.join('\n')}`).to.equal(true);
      } else {
        // Either rejected at once, or (a plausible element still being collected) waiting: both logged as a producer.
        expect(lines.some((l) => l.includes('producer connected')), `case ${i}`).to.equal(true);
      }
      await expectServing();
    }
    await validProducerReachesViewers('after random bytes');
  });

  it('a header larger than --max-header-size is rejected before it is buffered', async () => {
    const big = element([0xec], 4 * MAX_HEADER, Buffer.alloc(4 * MAX_HEADER)); // Void
    const input = Buffer.concat([recording.subarray(0, segmentStart), big]);
    const result = await sendIngest(ingestPort, input, { end: false, timeoutMs: 5000 });
    expect(result.closedByPeer).to.equal(true);
    const lines = linesFor(result.localPort);
    expect(lines.some((l) => / rejected: header exceeds 65536 bytes .*\[HEADER_TOO_LARGE\]/.test(l)), lines.join('\n')).to.equal(true);
    await expectServing();
    await validProducerReachesViewers('after an oversized header');
  });

  it('an element claiming 2^50 bytes is rejected, in the header and in a Cluster', async () => {
    const huge = 2n ** 50n;
    const inHeader = Buffer.concat([recording.subarray(0, segmentStart), element([0xec], huge)]);
    const clusterStart = recording.subarray(0, blocks[0].offset);
    const inCluster = Buffer.concat([clusterStart, element([0xa3], huge), Buffer.alloc(1000)]);
    const inGroup = Buffer.concat([clusterStart, element([0xa0], huge), Buffer.alloc(1000)]);
    for (const [name, input, code] of [
      ['header', inHeader, 'HEADER_TOO_LARGE'],
      ['SimpleBlock', inCluster, 'ELEMENT_TOO_LARGE'],
      ['BlockGroup', inGroup, 'ELEMENT_TOO_LARGE'],
    ] as const) {
      const result = await sendIngest(ingestPort, input, { end: false, timeoutMs: 5000 });
      expect(result.closedByPeer, name).to.equal(true);
      const lines = linesFor(result.localPort);
      expect(lines.some((l) => l.includes(`[${code}]`) && l.includes(String(huge))), `${name}:\n${lines.join('\n')}`).to.equal(true);
      await expectServing();
    }
    await validProducerReachesViewers('after 2^50-byte elements');
  });

  it('a stream cut in the middle of a block: logged, nothing partial reaches a viewer, the next producer continues it', async () => {
    // A viewer watches across the cut producer and the next one.
    const cutBlock = blocks[Math.floor(blocks.length / 2)];
    const cut = recording.subarray(0, cutBlock.offset + Math.floor(cutBlock.size / 2));
    const socket = net.connect(ingestPort, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    const localPort = socket.localPort!;
    socket.write(cut.subarray(0, headerEnd + 12));
    await waitFor('the header', () => linesFor(localPort).some((l) => l.includes(': stream video/webm')), 10_000);
    const viewer = new HttpViewer(`${relay.url}/live.webm`);
    await waitFor('viewer response', () => viewer.status === 200, 5000);
    socket.end(cut.subarray(headerEnd + 12));
    await waitFor('the cut producer to end', () => linesFor(localPort).some((l) => / producer (ended|disconnected) after/.test(l)), 10_000);
    expect(linesFor(localPort).some((l) => / ended mid-stream: stream ended inside /.test(l)), linesFor(localPort).join('\n')).to.equal(true);
    await expectServing();
    const afterCut = viewer.bytes;
    expect(afterCut).to.be.above(0);
    // The viewer got only whole blocks of the cut stream.
    expect(trimToCompleteBlocks(viewer.body).length, 'a partial block reached the viewer').to.equal(viewer.body.length);

    // The next producer, same tracks: the same viewer goes on.
    const next = await sendIngest(ingestPort, recording, { timeoutMs: 10_000 });
    await waitFor('the viewer to get the next producer', () => viewer.bytes > afterCut + 50_000, 10_000);
    expect(linesFor(next.localPort).some((l) => l.includes('producer ended after')), linesFor(next.localPort).join('\n')).to.equal(true);
    viewer.close();
    const body = trimToCompleteBlocks(viewer.body);
    const shape = streamShape(body);
    expect(shape.headers).to.equal(1);
    expect(shape.backwards).to.deep.equal([]);
    expect(ffmpegErrors(body)).to.deep.equal([]);
  });

  it('timestamps no Cluster can hold (a block before zero, a Cluster Timecode of 2^64-1) do not crash the relay', async () => {
    // A fresh relay: a block before time zero matters for the first producer it has seen.
    const { relay: fresh, ingestPort: port } = await startTcpRelay(['--join', 'next-keyframe']);
    try {
      const negative = Buffer.from(recording);
      for (const b of blocks.slice(0, 5)) negative.writeInt16BE(-1000, b.offset + b.timecodeOffset);
      const timecode = headerEnd + 12;
      expect(recording[timecode], 'Cluster Timecode ID').to.equal(0xe7);
      const timecodeEnd = timecode + 2 + (recording[timecode + 1] & 0x7f);
      const huge = Buffer.concat([recording.subarray(0, timecode), Buffer.from('e788ffffffffffffffff', 'hex'), recording.subarray(timecodeEnd)]);
      for (const [name, input] of [['block before zero', negative], ['Cluster Timecode 2^64-1', huge]] as const) {
        const result = await sendIngest(port, input, { timeoutMs: 5000 });
        await waitFor(`${name}: the relay to take it`, () => fresh.process.exitCode !== null || logLines(fresh.log(), new RegExp(`:${result.localPort}: producer (ended|disconnected)`)).length > 0, 5000).catch((e: Error) => {
          throw new Error(`${e.message}\n${fresh.log().slice(-2500)}`);
        });
        expect(fresh.process.exitCode, `${name} crashed the relay:\n${fresh.log().slice(-2500)}`).to.equal(null);
      }
      await validProducerReachesViewers('after impossible timestamps', { relay: fresh, ingestPort: port });
    } finally {
      await fresh.stop('SIGKILL');
    }
  });

  it(`bit flips in a real stream (${FLIP_CASES} seeded cases over TCP): no crash, bounded memory, one log line each, a valid producer works afterwards`, async function () {
    this.timeout(240_000);
    const seed = Number(process.env.RELIABILITY_SEED ?? Date.now() % 1e9);
    console.log(`      bit-flip seed ${seed} (RELIABILITY_SEED=${seed} replays it)`);
    const random = prng(seed);
    // A shorter stream than the whole recording keeps each case quick: header and about a second.
    const sample = recording.subarray(0, blocks[Math.min(blocks.length - 1, 90)].offset);
    let rssMaxKb = 0;
    const outcomes = new Map<string, number>();
    for (let i = 0; i < FLIP_CASES; i++) {
      const input = Buffer.from(sample);
      const flips = 1 + Math.floor(random() * 8);
      // A third of the cases aim at the header, where one bit changes the most.
      const range = i % 3 === 0 ? headerEnd : input.length;
      for (let f = 0; f < flips; f++) input[Math.floor(random() * range)] ^= 1 << Math.floor(random() * 8);
      const result = await sendIngest(ingestPort, input, { timeoutMs: 5000 });
      expect(relay.process.exitCode, `case ${i} (seed ${seed}) crashed the relay:\n${relay.log().slice(-4000)}`).to.equal(null);
      await waitFor(`case ${i}: its end in the log`, () => linesFor(result.localPort).some((l) => / producer (ended|disconnected|failed)/.test(l)), 5000);
      const lines = linesFor(result.localPort);
      const outcome = / rejected: .*\[(\w+)\]/.exec(lines.join('\n'))?.[1] ?? (lines.some((l) => l.includes('ended mid-stream')) ? 'TRUNCATED' : 'accepted');
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      if (i % 20 === 0) rssMaxKb = Math.max(rssMaxKb, vmRssKb(relay.process.pid!));
    }
    await expectServing();
    rssMaxKb = Math.max(rssMaxKb, vmRssKb(relay.process.pid!));
    console.log(`      outcomes ${JSON.stringify(Object.fromEntries(outcomes))}; VmRSS ${rssStartKb} kB at start, at most ${rssMaxKb} kB`);
    expect(rssMaxKb - rssStartKb, 'VmRSS growth, kB').to.be.below(100 * 1024);
    await validProducerReachesViewers('after bit flips');
  });

  it('a second producer while one is active is refused: its socket closed, a log line, the first goes on', async () => {
    const first = net.connect(ingestPort, '127.0.0.1');
    first.on('error', () => {});
    await new Promise<void>((resolve) => first.once('connect', () => resolve()));
    first.write(recording.subarray(0, headerEnd + 20_000));
    const firstPort = first.localPort!;
    await waitStats(relay.url, 'the first producer', (s) => s.ingest.state === 'receiving' && s.ingest.producer === `tcp 127.0.0.1:${firstPort}`);
    const refusedBefore = (await waitStats(relay.url, 'stats', () => true)).ingest.refused as number;
    try {
      for (let i = 0; i < 3; i++) {
        const t0 = Date.now();
        const second = await sendIngest(ingestPort, recording.subarray(0, 5000), { end: false, timeoutMs: 5000 });
        expect(second.closedByPeer, 'the relay closes the second producer').to.equal(true);
        expect(Date.now() - t0).to.be.below(4000);
        const lines = linesFor(second.localPort);
        expect(lines.some((l) => l.includes(`refused: tcp 127.0.0.1:${firstPort} is already producing`)), lines.join('\n')).to.equal(true);
      }
      const stats = await waitStats(relay.url, 'stats', () => true);
      expect(stats.ingest.refused).to.equal(refusedBefore + 3);
      expect(stats.ingest.producer).to.equal(`tcp 127.0.0.1:${firstPort}`);
      expect(first.destroyed, 'the first producer is still connected').to.equal(false);
    } finally {
      first.destroy();
    }
    await waitStats(relay.url, 'the first producer gone', (s) => s.ingest.state === 'waiting');
    await expectServing();
  });

  it('a real gst-launch-1.0 producer afterwards: viewers get a live, decodable stream', async () => {
    const producer = gstProducer(ingestPort);
    await waitLive(relay, 20_000);
    const viewer = new HttpViewer(`${relay.url}/live.webm`);
    try {
      await waitFor('3 s of live media', () => {
        const video = streamShape(trimToCompleteBlocks(viewer.body)).times.get(1) ?? [];
        return video.length > 0 && video[video.length - 1] - video[0] >= 3000;
      }, 20_000);
    } finally {
      viewer.close();
      await stopProcess(producer.process);
    }
    const body = trimToCompleteBlocks(viewer.body);
    expect(streamShape(body).headers).to.equal(1);
    expect(ffmpegErrors(body)).to.deep.equal([]);
    const rss = vmRssKb(relay.process.pid!);
    console.log(`      VmRSS ${rssStartKb} kB after warm-up, ${rss} kB at the end`);
    expect(rss - rssStartKb).to.be.below(100 * 1024);
  });
});
