/**
 * Ingest modes with real producers: the bytes a viewer receives are exactly what the
 * normalizer makes of the producer's stream (checked against the same code run in
 * this process on the same bytes), and ffmpeg's live WebM, whose clusters are cut by
 * time and not at keyframes, reaches viewers re-clustered at keyframes.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { Normalizer, type NormalizedStream } from '../../src/normalizer/normalizer.js';
import type { InitSegment } from '../../src/normalizer/init-segment.js';
import { WebmSplitter } from '../../src/webm/splitter.js';
import { HttpViewer, WsViewer, gstChildren, track, killTracked, waitStats } from '../helpers/faults.js';
import { ffmpegWebm } from '../helpers/media.js';
import { recordEncoder } from '../helpers/record.js';
import { capture, freePort, startRelay, trimToCompleteBlocks, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { backwardsInClusters, decodeErrors, mapLimit, parseStream, shutdown } from '../helpers/viewers.js';

/** What the relay's normalizer makes of `bytes`, run here: init segment, then every cluster and block. */
function normalizeHere(bytes: Buffer, chunkSize = 4096): { stream: Buffer; stats: Normalizer['stats'] } {
  const parts: Buffer[] = [];
  const out: NormalizedStream = {
    init: (init: InitSegment) => parts.push(init.bytes),
    cluster: (header: Buffer) => parts.push(header),
    block: (blockParts: Buffer[]) => parts.push(...blockParts),
  };
  const normalizer = new Normalizer(out);
  const splitter = new WebmSplitter({
    header: (h) => normalizer.header(h),
    cluster: () => {},
    block: (b) => normalizer.block(b),
    end: () => {},
    error: (e) => {
      if (e.code !== 'TRUNCATED') throw e;
    },
  });
  // Fed in pieces, as a socket would deliver it.
  for (let at = 0; at < bytes.length; at += chunkSize) splitter.feed(bytes.subarray(at, at + chunkSize));
  splitter.end();
  normalizer.flush();
  return { stream: Buffer.concat(parts), stats: normalizer.stats };
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/**
 * Connects an HTTP and a WebSocket viewer, then lets `feed` publish; resolves once the
 * relay has ended both (--producer-grace 0: as soon as the producer has gone).
 */
async function viewersOfWholeStream(relay: RunningRelay, feed: () => void): Promise<{ http: HttpViewer; ws: Buffer }> {
  const http = new HttpViewer(`${relay.url}/live.webm`);
  const ws = new WsViewer(`ws://127.0.0.1:${relay.port}/live`);
  await waitStats(relay.url, 'the viewers to be connected', (s) => s.connections === 2, 5000);
  feed();
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('the viewers were not let go within 20 s')), 20_000));
  await Promise.race([Promise.all([http.done, ws.closed]), timeout]);
  return { http, ws: Buffer.concat(ws.messages.flatMap((m) => (m.binary ? [m.binary] : []))) };
}

describe('relay: HTTP and WebSocket viewers get exactly what the normalizer makes of the producer stream', function () {
  this.timeout(90_000);
  let relay: RunningRelay | null = null;

  afterEach(async () => {
    await shutdown(relay);
    relay = null;
    await killTracked();
  });

  it('--ingest - (stdin) fed a recording of the relay\'s own GStreamer pipeline: identical bytes', async () => {
    const recording = await recordEncoder(4);
    const raw = parseStream(recording);
    const rawBackwards = backwardsInClusters(raw.clusters).length;
    const rawUnaligned = raw.clusters.filter((c) => c.blocks.length > 0 && !(c.blocks[0].video && c.blocks[0].keyframe)).length;
    const expected = normalizeHere(recording);
    console.log(
      `      GStreamer recording: ${recording.length} bytes, ${raw.clusters.length} clusters (${rawUnaligned} not starting at a video keyframe), ` +
        `${rawBackwards} places where time goes back inside a cluster; normalizer here: ${JSON.stringify(expected.stats)}`,
    );
    relay = await startRelay(['--ingest', '-', '--producer-grace', '0']);
    const r = relay;
    const viewers = await viewersOfWholeStream(r, () => r.process.stdin!.end(recording));
    expect(viewers.http.status).to.equal(200);
    expect(viewers.http.outcome).to.equal('end');
    const got = viewers.http.body;
    const at = firstDifference(got, expected.stream);
    expect(at, `first differing byte (viewer ${got.length} bytes, expected ${expected.stream.length})`).to.equal(-1);
    expect(firstDifference(viewers.ws, expected.stream), `WebSocket: first differing byte (${viewers.ws.length} bytes)`).to.equal(-1);
    // And what the relay itself counted agrees.
    expect(expected.stats.blocks).to.be.greaterThan(100);
    expect(await decodeErrors(got)).to.deep.equal([]);
    const out = parseStream(got);
    expect(backwardsInClusters(out.clusters)).to.deep.equal([]);
  });

  it('--ingest tcp:// fed ffmpeg live WebM (VP9 + Opus, 700 ms clusters): identical bytes, every cluster at a keyframe', async () => {
    const media = ffmpegWebm({ videoCodec: 'vp9', audioCodec: 'opus', seconds: 4, keyframeInterval: 45, clusterTimeLimitMs: 700 });
    const raw = parseStream(media.bytes);
    const rawUnaligned = raw.clusters.filter((c) => c.blocks.length > 0 && !(c.blocks[0].video && c.blocks[0].keyframe)).length;
    console.log(`      ffmpeg file: ${media.bytes.length} bytes, ${raw.clusters.length} clusters, ${rawUnaligned} not starting at a video keyframe`);
    expect(rawUnaligned, 'the producer stream must have clusters not aligned to keyframes').to.be.greaterThan(0);
    const expected = normalizeHere(media.bytes);

    const port = await freePort();
    relay = await startRelay(['--ingest', `tcp://127.0.0.1:${port}`, '--producer-grace', '0']);
    const r = relay;
    await waitFor('the ingest port', () => /listening for a producer/.test(r.log()), 5000);
    const viewers = await viewersOfWholeStream(r, () => {
      const socket = net.connect(port, '127.0.0.1', () => socket.end(media.bytes));
      socket.on('error', () => {});
    });
    const got = viewers.http.body;
    expect(firstDifference(got, expected.stream), `first differing byte (viewer ${got.length} bytes, expected ${expected.stream.length})`).to.equal(-1);
    expect(firstDifference(viewers.ws, expected.stream), `WebSocket: first differing byte (${viewers.ws.length} bytes)`).to.equal(-1);
    const out = parseStream(got);
    expect(out.clusters.length).to.be.greaterThan(1);
    for (const c of out.clusters) expect(c.blocks[0], `cluster ${c.timecode}`).to.include({ video: true, keyframe: true });
    // ffmpeg's 45-frame GOP at 30 fps: a cluster per keyframe, 1.5 s apart.
    const keyframes = raw.clusters.flatMap((c) => c.blocks).filter((b) => b.video && b.keyframe).length;
    expect(out.clusters.length).to.equal(keyframes);
    expect(await decodeErrors(got)).to.deep.equal([]);
  });
});

describe('relay: ingest from a live ffmpeg producer (VP9 + Opus, -live 1, clusters cut by time)', function () {
  this.timeout(90_000);
  let relay: RunningRelay | null = null;

  after(async () => {
    await killTracked();
    await shutdown(relay);
  });

  it('viewers get clusters that each start with a video keyframe, and decode cleanly', async () => {
    const port = await freePort();
    relay = await startRelay(['--ingest', `tcp://127.0.0.1:${port}`]);
    const r = relay;
    await waitFor('the ingest port', () => /listening for a producer/.test(r.log()), 5000);
    const idle = await fetch(`${r.url}/healthz`);
    expect(idle.status, '/healthz with no producer yet').to.equal(503);
    // The brief's command line, as a user would type it.
    const args = [
      '-hide_banner', '-nostdin', '-v', 'error',
      '-re', '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=30',
      '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
      '-c:v', 'libvpx-vp9', '-deadline', 'realtime', '-cpu-used', '8', '-g', '45', '-b:v', '400k',
      '-c:a', 'libopus', '-f', 'webm', '-live', '1', '-cluster_time_limit', '700',
      `tcp://127.0.0.1:${port}`,
    ];
    const ffmpeg = track(spawn('ffmpeg', args, { stdio: ['ignore', 'ignore', 'pipe'] }));
    let stderr = '';
    ffmpeg.stderr!.setEncoding('utf8');
    ffmpeg.stderr!.on('data', (t: string) => (stderr += t));
    await waitLive(r, 15_000).catch((e: Error) => {
      throw new Error(`${e.message}; ffmpeg: ${stderr}`);
    });
    expect(gstChildren(r.process.pid!), 'no encoder spawned in ingest mode').to.deep.equal([]);

    const viewers = await Promise.all([capture(`${r.url}/live.webm`, 6000), (async () => {
      await new Promise((res) => setTimeout(res, 1500));
      return capture(`${r.url}/live.webm`, 4500);
    })()]);
    const stats = await waitStats(r.url, 'stats', () => true);
    console.log(`      ffmpeg producer: normalizer ${JSON.stringify(stats.normalizer)}, ${stats.ingest.bytesIn} bytes in`);
    for (const [i, v] of viewers.entries()) {
      expect(v.status).to.equal(200);
      const parsed = parseStream(v.body);
      expect(parsed.errors).to.deep.equal([]);
      expect(parsed.info!.mimeType).to.match(/^video\/webm; codecs="vp09[^"]*,opus"$|^video\/webm; codecs="vp9,opus"$/);
      expect(parsed.clusters.length, `viewer ${i} clusters`).to.be.greaterThan(1);
      for (const c of parsed.clusters) {
        if (c.blocks.length === 0) continue;
        expect(c.blocks[0], `viewer ${i}, cluster ${c.timecode}`).to.include({ video: true, keyframe: true });
        // A cluster holds one GOP: the only video keyframe is its first block.
        expect(c.blocks.filter((b) => b.video && b.keyframe), `viewer ${i}, cluster ${c.timecode}`).to.have.length(1);
      }
      expect(backwardsInClusters(parsed.clusters)).to.deep.equal([]);
    }
    const errors = await mapLimit(viewers, 2, (v) => decodeErrors(trimToCompleteBlocks(v.body)));
    errors.forEach((lines, i) => expect(lines, `decoding viewer ${i}`).to.deep.equal([]));
    expect(stderr.trim(), 'ffmpeg errors').to.equal('');
  });
});
