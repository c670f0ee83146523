/**
 * Each limit option takes effect, seen from the viewer's or the producer's side:
 * --max-viewers, --max-queue, --stall-timeout, --max-header-size, --max-element-size,
 * --ws-max-payload (test/relay covers none of these).
 */
import { expect } from 'chai';
import net from 'node:net';
import { recordEncoder } from '../helpers/record.js';
import { ffmpegErrors, startRelay, trimToCompleteBlocks, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { WebmSplitter } from '../../src/webm/splitter.js';
import { fdCount, HttpViewer, logLines, startTcpRelay, sendIngest, sleep, streamShape, waitStats, WsViewer } from '../helpers/faults.js';

const SMALL = ['--width', '320', '--height', '240', '--video-bitrate', '300', '--audio-bitrate', '32'];
/** Noise does not compress: the encoder really sends its bitrate, so a viewer that stops reading fills the kernel's buffers in seconds. */
const HEAVY = ['--video-source', 'videotestsrc is-live=true pattern=snow', '--video-bitrate', '6000'];

/** An EBML element with an 8-byte size. */
function element(id: number[], body: Buffer): Buffer {
  const size = Buffer.alloc(8);
  size.writeBigUInt64BE(BigInt(body.length) | (1n << 56n));
  return Buffer.concat([Buffer.from(id), size, body]);
}

/** A viewer of /live.webm over a raw socket whose reading can be paused. */
class RawViewer {
  readonly socket: net.Socket;
  bytes = 0;
  chunks: Buffer[] = [];
  closed = false;
  closedAt = 0;

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('error', () => {});
    this.socket.on('connect', () => this.socket.write('GET /live.webm HTTP/1.1\r\nHost: x\r\n\r\n'));
    this.socket.on('data', (chunk: Buffer) => {
      this.bytes += chunk.length;
      this.chunks.push(chunk);
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.closedAt = Date.now();
    });
  }

  /** The body of the chunked response. */
  body(): Buffer {
    const all = Buffer.concat(this.chunks);
    const start = all.indexOf('\r\n\r\n') + 4;
    const out: Buffer[] = [];
    let pos = start;
    for (;;) {
      const eol = all.indexOf('\r\n', pos);
      if (eol < 0) break;
      const size = parseInt(all.subarray(pos, eol).toString('latin1'), 16);
      if (!(size > 0) || eol + 2 + size > all.length) {
        if (size > 0) out.push(all.subarray(eol + 2));
        break;
      }
      out.push(all.subarray(eol + 2, eol + 2 + size));
      pos = eol + 2 + size + 2;
    }
    return Buffer.concat(out);
  }

  close(): void {
    this.socket.destroy();
  }
}

describe('reliability: limits take effect', function () {
  this.timeout(90_000);
  let relay: RunningRelay | null = null;
  const open: { close(): void }[] = [];

  afterEach(async () => {
    for (const o of open.splice(0)) o.close();
    await relay?.stop('SIGKILL');
    relay = null;
  });

  it('--max-viewers 2: a third viewer gets 503 (HTTP, HEAD) or close 1013 (WebSocket); room again once one leaves', async () => {
    relay = await startRelay([...SMALL, '--max-viewers', '2']);
    await waitLive(relay, 20_000);
    const a = new HttpViewer(`${relay.url}/live.webm`);
    const b = new WsViewer(`ws://127.0.0.1:${relay.port}/live`);
    open.push(a, b);
    await waitStats(relay.url, 'two viewers', (s) => s.viewers === 2);
    const third = await fetch(`${relay.url}/live.webm`);
    expect(third.status).to.equal(503);
    expect(third.headers.get('retry-after')).to.equal('10');
    await third.body?.cancel();
    expect((await fetch(`${relay.url}/live.webm`, { method: 'HEAD' })).status).to.equal(503);
    const ws = new WsViewer(`ws://127.0.0.1:${relay.port}/live`);
    open.push(ws);
    await Promise.race([ws.closed, sleep(5000)]);
    expect(ws.closeCode).to.equal(1013);
    expect(ws.binaryBytes, 'the refused WebSocket got no media').to.equal(0);
    const stats = await waitStats(relay.url, 'stats', () => true);
    expect(stats.viewers).to.equal(2);
    expect(stats.rejected).to.equal(2);
    // The two admitted viewers are unaffected.
    const [ha, wb] = [a.bytes, b.binaryBytes];
    await waitFor('the admitted viewers to keep receiving', () => a.bytes > ha + 10_000 && b.binaryBytes > wb + 10_000, 10_000);
    a.close();
    await waitStats(relay.url, 'one viewer', (s) => s.viewers === 1);
    const again = new HttpViewer(`${relay.url}/live.webm`);
    open.push(again);
    await waitFor('a new viewer to get media', () => again.bytes > 10_000, 10_000);
    expect(again.status).to.equal(200);
  });

  it('--max-queue 64K: a viewer that stops reading skips to a later keyframe instead of queueing, and still decodes; others are unaffected', async () => {
    relay = await startRelay([...HEAVY, '--max-queue', '64K', '--stall-timeout', '60']);
    await waitLive(relay, 20_000);
    const slow = new RawViewer(relay.port);
    const fast = new HttpViewer(`${relay.url}/live.webm`);
    open.push(slow, fast);
    await waitFor('the slow viewer to get media', () => slow.bytes > 50_000, 10_000);
    slow.socket.pause();
    const paused = Date.now();
    const stats = await waitStats(relay.url, 'the slow viewer to skip', (s) => s.skips >= 1, 40_000);
    slow.socket.resume();
    const pausedMs = Date.now() - paused;
    const fastAtResume = fast.bytes;
    await sleep(3000);
    const after = await waitStats(relay.url, 'stats', () => true);
    console.log(`      skipped after ${pausedMs} ms paused; skips ${after.skips}; slow ${slow.bytes} B, fast ${fast.bytes} B`);
    expect(stats.skips).to.be.at.least(1);
    expect(slow.closed, 'the slow viewer is kept').to.equal(false);
    expect(after.viewers).to.equal(2);
    expect(fast.outcome).to.equal('open');
    expect(fast.bytes).to.be.above(fastAtResume + 100_000);
    // The slow viewer missed part of the stream: it has less than the fast one.
    expect(slow.bytes).to.be.below(fast.bytes);
    const body = trimToCompleteBlocks(slow.body());
    const shape = streamShape(body);
    expect(shape.headers).to.equal(1);
    expect(shape.backwards).to.deep.equal([]);
    // Resumed at a keyframe: nothing the decoder cannot handle.
    expect(ffmpegErrors(body)).to.deep.equal([]);
  });

  it('--stall-timeout 1: a viewer that reads nothing is disconnected; a reading viewer stays', async () => {
    relay = await startRelay([...HEAVY, '--stall-timeout', '1']);
    await waitLive(relay, 20_000);
    const pid = relay.process.pid!;
    const fdsBefore = fdCount(pid);
    const stalled = new RawViewer(relay.port);
    const reading = new HttpViewer(`${relay.url}/live.webm`);
    open.push(stalled, reading);
    await waitFor('the viewer to get its first bytes', () => stalled.bytes > 0, 10_000);
    stalled.socket.pause();
    const t0 = Date.now();
    // It cannot see the close while it does not read: the relay's count shows it first.
    const stats = await waitStats(relay.url, 'the stalled viewer to be dropped', (s) => s.stallDisconnects >= 1, 40_000);
    const droppedMs = Date.now() - t0;
    expect(stats.stallDisconnects).to.equal(1);
    expect(stats.viewers).to.equal(1);
    // The relay lets go of the socket (HttpTransport destroys it 2 s after the end).
    await waitFor('the relay to close the stalled socket', () => fdCount(pid) <= fdsBefore + 1, 10_000);
    // Reading again, the viewer gets what was in flight, then the end of the stream.
    stalled.socket.resume();
    await waitFor('the stalled viewer to see the connection end', () => stalled.closed, 15_000);
    console.log(`      stalled viewer dropped ${droppedMs} ms after it stopped reading; saw the end ${stalled.closedAt - t0} ms after`);
    const body = trimToCompleteBlocks(stalled.body());
    expect(streamShape(body).headers).to.equal(1);
    expect(reading.outcome, 'the reading viewer').to.equal('open');
    const before = reading.bytes;
    await waitFor('the reading viewer to keep receiving', () => reading.bytes > before + 100_000, 10_000);
  });

  describe('producer-side limits (--ingest tcp://)', () => {
    let recording: Buffer;
    let headerEnd = 0;
    let segmentStart = 0;
    let blockOffsets: number[] = [];
    let ingestPort = 0;

    before(async function () {
      this.timeout(150_000);
      recording = await recordEncoder(2, { videoBitrateKbps: 300 });
      blockOffsets = [];
      new WebmSplitter({
        header: (h) => {
          headerEnd = h.offset + h.bytes.length;
          segmentStart = h.ebml.length + 12;
        },
        cluster: () => {},
        block: (b) => blockOffsets.push(b.offset),
        end: () => {},
        error: (e) => {
          throw e;
        },
      }).feed(recording);
    });

    const startIngestRelay = async (args: string[]) => {
      const started = await startTcpRelay(args);
      relay = started.relay;
      ingestPort = started.ingestPort;
      return relay;
    };
    const linesFor = (localPort: number) => logLines(relay!.log(), new RegExp(`tcp 127\\.0\\.0\\.1:${localPort}: `));
    /** Sends a stream; resolves with what the relay said about it. */
    const produce = async (input: Buffer) => {
      const result = await sendIngest(ingestPort, input, { timeoutMs: 5000 });
      await waitFor('the producer to be done', () => linesFor(result.localPort).some((l) => / producer (ended|disconnected)/.test(l)), 5000);
      return linesFor(result.localPort).join('\n');
    };
    /** The recording with `extra` placed in the header, before the Tracks... (after the Segment start). */
    const withHeaderExtra = (extra: Buffer) => Buffer.concat([recording.subarray(0, segmentStart), extra, recording.subarray(segmentStart)]);
    /** The recording with `extra` inside the first Cluster, before its 10th block. */
    const withClusterExtra = (extra: Buffer) => Buffer.concat([recording.subarray(0, blockOffsets[10]), extra, recording.subarray(blockOffsets[10])]);

    it('--max-header-size 8K: a 7 KB header is taken, a 9 KB header is rejected with a log line', async () => {
      await startIngestRelay(['--max-header-size', '8K']);
      const small = withHeaderExtra(element([0xec], Buffer.alloc(7 * 1024 - (headerEnd - segmentStart) - 100)));
      const big = withHeaderExtra(element([0xec], Buffer.alloc(9 * 1024)));
      const accepted = await produce(small);
      expect(accepted).to.include(': stream video/webm');
      expect(accepted).to.not.include('rejected');
      const rejected = await produce(big);
      expect(rejected).to.match(/rejected: header exceeds 8192 bytes .*\[HEADER_TOO_LARGE\]/);
      expect(rejected).to.not.include(': stream video/webm');
    });

    it('--max-element-size 64K: a 60 KB element is taken, 70 KB ones (skipped element, block) are rejected', async () => {
      await startIngestRelay(['--max-element-size', '64K']);
      const viewer = new HttpViewer(`${relay!.url}/live.webm`);
      open.push(viewer);
      // Connected before the stream arrives, so it gets all of it, not only the last GOP.
      await waitStats(relay!.url, 'the viewer to connect', (s) => s.connections === 1);
      const fits = await produce(withClusterExtra(element([0xec], Buffer.alloc(60 * 1024))));
      expect(fits).to.include('producer ended after');
      expect(fits).to.not.include('rejected');
      await waitFor('the viewer to get the stream', () => viewer.bytes > 50_000, 5000);
      const body = trimToCompleteBlocks(viewer.body);
      expect(ffmpegErrors(body)).to.deep.equal([]);
      for (const [name, id] of [['Void', [0xec]], ['SimpleBlock', [0xa3]]] as const) {
        const lines = await produce(withClusterExtra(element([...id], Buffer.alloc(70 * 1024, 0x81))));
        expect(lines, name).to.match(new RegExp(`rejected: ${name} of \\d+ bytes exceeds the 65536-byte limit .*\\[ELEMENT_TOO_LARGE\\]`));
      }
      expect(relay!.process.exitCode).to.equal(null);
    });

    it('--ws-max-payload 256: a 256-byte message is taken, a 257-byte one closes the socket with 1009', async () => {
      await startIngestRelay(['--ws-max-payload', '256']);
      const ok = new WsViewer(`ws://127.0.0.1:${relay!.port}/live`);
      const over = new WsViewer(`ws://127.0.0.1:${relay!.port}/live`);
      open.push(ok, over);
      await Promise.all([ok.opened, over.opened]);
      ok.socket.send(Buffer.alloc(256));
      ok.socket.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(200) }));
      over.socket.send(Buffer.alloc(257));
      await Promise.race([over.closed, sleep(5000)]);
      expect(over.closeCode).to.equal(1009);
      await waitFor('a pong for the message at the limit', () => ok.messages.some((m) => m.text?.includes('"pong"')), 5000);
      expect(ok.closeCode).to.equal(null);
    });
  });
});
