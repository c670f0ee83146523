/**
 * Encoder mode with the default arguments: one gst-launch-1.0, many HTTP viewers of
 * /live.webm, and what each of them receives. One relay for the whole file.
 */
import { expect } from 'chai';
import http from 'node:http';
import { HttpViewer, WsViewer, gstChildren, waitStats } from '../helpers/faults.js';
import { capture, countProcesses, startRelay, trimToCompleteBlocks as trimmed, waitFor, waitLive, type Capture, type RunningRelay } from '../helpers/relay.js';
import { backwardsInClusters, contiguousRun, decodeErrors, mapLimit, overlap, parseStream, shutdown, sleep } from '../helpers/viewers.js';

const EBML_MAGIC = Buffer.from([0x1a, 0x45, 0xdf, 0xa3]);

/** A HEAD request: status, headers, and how many body bytes came (there must be none). */
function head(url: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; bodyBytes: number }> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method: 'HEAD' }, (response) => {
      let bodyBytes = 0;
      response.on('data', (chunk: Buffer) => (bodyBytes += chunk.length));
      response.once('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, bodyBytes }));
    });
    request.setTimeout(5000, () => request.destroy(new Error('HEAD /live.webm did not end within 5 s')));
    request.once('error', reject);
    request.end();
  });
}

describe('relay: encoder mode, default arguments', function () {
  this.timeout(120_000);
  let relay: RunningRelay;

  before(async function () {
    relay = await startRelay([]);
    await waitLive(relay, 20_000);
  });

  after(async () => {
    await shutdown(relay);
  });

  it('serves 50 concurrent HTTP viewers from one gst-launch-1.0; each gets a playable stream from a keyframe', async () => {
    const N = 50;
    const ms = 6000;
    const captures = Promise.all(Array.from({ length: N }, () => capture(`${relay.url}/live.webm`, ms)));
    // While they are all connected: the count, and the one encoder.
    const stats = await waitStats(relay.url, `${N} viewers`, (s) => s.viewers === N, ms - 1000);
    const encoders = gstChildren(relay.process.pid!);
    const everywhere = countProcesses('gst-launch-1.0');
    const all = await captures;
    console.log(`      ${N} viewers: /api/stats viewers=${stats.viewers}; gst-launch-1.0 children of the relay: ${encoders.length}, on the machine: ${everywhere}`);
    expect(stats.viewers).to.equal(N);
    expect(stats.viewersByTransport.http).to.equal(N);
    expect(encoders, 'gst-launch-1.0 processes the relay runs').to.have.length(1);
    expect(stats.encoder.pid).to.equal(encoders[0]);

    const sizes = all.map((c) => c.body.length);
    console.log(`      bytes per viewer in ${ms} ms: min ${Math.min(...sizes)}, max ${Math.max(...sizes)}`);
    for (const [i, c] of all.entries()) {
      expect(c.status, `viewer ${i} status`).to.equal(200);
      expect(c.headers['content-type'], `viewer ${i}`).to.equal('video/webm');
      expect(c.headers['cache-control'], `viewer ${i}`).to.equal('no-store');
      expect(c.headers['content-length'], `viewer ${i}`).to.equal(undefined);
      expect(c.body.subarray(0, 4).equals(EBML_MAGIC), `viewer ${i} starts with an EBML header`).to.equal(true);
      const parsed = parseStream(c.body);
      expect(parsed.errors, `viewer ${i}`).to.deep.equal([]);
      expect(parsed.headers, `viewer ${i}: one init segment`).to.equal(1);
      expect(parsed.info!.mimeType).to.equal('video/webm; codecs="vp8,opus"');
      expect(parsed.clusters.length, `viewer ${i}: clusters in ${ms} ms`).to.be.at.least(1);
      const first = parsed.clusters[0].blocks[0];
      expect(first, `viewer ${i}: first block`).to.include({ video: true, keyframe: true });
    }
    // Every viewer was sent the same init segment.
    const init = parseStream(all[0].body).init!;
    for (const c of all) expect(c.body.subarray(0, init.length).equals(init)).to.equal(true);

    const errors = await mapLimit(all, 2, (c) => decodeErrors(trimmed(c.body)));
    errors.forEach((lines, i) => expect(lines, `ffmpeg decoding viewer ${i}`).to.deep.equal([]));
    await waitStats(relay.url, 'the viewers to be gone', (s) => s.viewers === 0, 5000);
  });

  it('HEAD /live.webm returns the headers only and adds no viewer', async () => {
    const before = await waitStats(relay.url, 'stats', () => true);
    const response = await head(`${relay.url}/live.webm`);
    expect(response.status).to.equal(200);
    expect(response.headers['content-type']).to.equal('video/webm');
    expect(response.headers['cache-control']).to.equal('no-store');
    expect(response.bodyBytes).to.equal(0);
    const stats = await waitStats(relay.url, 'no viewers', (s) => s.viewers === 0, 3000);
    expect(stats.viewers).to.equal(0);
    expect(stats.joins, 'viewers ever joined').to.equal(before.joins);
  });

  it('Range: bytes=0- gets the live stream (200, from the init segment)', async () => {
    const c = await capture(`${relay.url}/live.webm`, 2500, { Range: 'bytes=0-' });
    expect(c.status).to.equal(200);
    expect(c.headers['content-type']).to.equal('video/webm');
    expect(c.headers['content-range']).to.equal(undefined);
    expect(c.body.subarray(0, 4).equals(EBML_MAGIC)).to.equal(true);
    const parsed = parseStream(c.body);
    expect(parsed.clusters.length).to.be.greaterThan(0);
    expect(parsed.clusters[0].blocks[0]).to.include({ video: true, keyframe: true });
  });

  it('/healthz is 200 while live; /metrics is Prometheus text with webm_relay_viewers counting a viewer', async () => {
    const health = await fetch(`${relay.url}/healthz`);
    expect(health.status).to.equal(200);
    const viewer = new HttpViewer(`${relay.url}/live.webm`);
    try {
      await waitStats(relay.url, 'one viewer', (s) => s.viewers === 1, 5000);
      const metrics = await fetch(`${relay.url}/metrics`);
      expect(metrics.status).to.equal(200);
      expect(metrics.headers.get('content-type')).to.match(/^text\/plain; version=0\.0\.4/);
      const text = await metrics.text();
      expect(text).to.match(/^# HELP webm_relay_viewers /m);
      expect(text).to.match(/^# TYPE webm_relay_viewers gauge$/m);
      expect(text).to.match(/^webm_relay_viewers\{stream="live",transport="http"\} 1$/m);
      expect(text).to.match(/^webm_relay_viewers\{stream="live",transport="ws"\} 0$/m);
      expect(text).to.match(/^webm_relay_live\{stream="live"\} 1$/m);
      // Every sample line is `name{labels} value`.
      for (const line of text.split('\n').filter((l) => l && !l.startsWith('#'))) {
        expect(line).to.match(/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+-]+$|^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? (NaN|[+-]Inf)$/);
      }
    } finally {
      viewer.close();
    }
  });

  describe('viewers joining at different times', () => {
    let early: Capture;
    let late: Capture;

    /** Waits until `viewer` has received `n` complete clusters (the encoder's keyframe spacing in time depends on the machine's load). */
    const completeClusters = (viewer: HttpViewer, n: number, what: string) =>
      waitFor(`${what} to receive ${n} complete clusters`, () => parseStream(viewer.body).clusters.filter((c) => c.complete).length >= n, 30_000);

    before(async function () {
      this.timeout(90_000);
      const a = new HttpViewer(`${relay.url}/live.webm`);
      const b = await (async () => {
        try {
          // The late viewer joins once the early one is past its first cluster, and both watch a few more.
          await completeClusters(a, 1, 'the early viewer');
          await sleep(500);
          const b = new HttpViewer(`${relay.url}/live.webm`);
          try {
            await completeClusters(b, 3, 'the late viewer');
          } finally {
            b.close();
          }
          return b;
        } finally {
          a.close();
        }
      })();
      early = { status: a.status, headers: {}, body: a.body };
      late = { status: b.status, headers: {}, body: b.body };
    });

    it('a late joiner starts at a keyframe cluster and receives the same clusters, byte for byte, as an earlier viewer', async () => {
      const a = parseStream(early.body);
      const b = parseStream(late.body);
      expect(b.init!.equals(a.init!), 'same init segment').to.equal(true);
      expect(b.clusters[0].blocks[0]).to.include({ video: true, keyframe: true });
      for (const c of [...a.clusters, ...b.clusters].filter((c) => c.blocks.length > 0)) {
        expect(c.blocks[0], `cluster ${c.timecode}`).to.include({ video: true, keyframe: true });
      }
      const run = contiguousRun(a.clusters, b.clusters);
      if (typeof run === 'string') expect.fail(run);
      console.log(`      late joiner: ${b.clusters.length} clusters; its first is the early viewer's cluster ${run.at}; ${run.compared} compared, all identical`);
      // The late joiner came 2.5 s later: it must not have been given the early viewer's start.
      expect(run.at).to.be.greaterThan(0);
      expect(run.compared).to.be.at.least(2);
      expect(late.status).to.equal(200);
      expect(await decodeErrors(trimmed(late.body))).to.deep.equal([]);
    });

    it('after the normalizer, block timestamps never decrease inside a cluster, across tracks (GStreamer VP8 + Opus)', () => {
      const parsed = parseStream(early.body);
      const tracks = new Set(parsed.clusters.flatMap((c) => c.blocks.map((b) => b.track)));
      expect(tracks.size, 'video and audio blocks').to.equal(2);
      const blocks = parsed.clusters.reduce((n, c) => n + c.blocks.length, 0);
      const video = parsed.clusters.flatMap((c) => c.blocks.filter((b) => b.video));
      const spanS = (video[video.length - 1].timecode - video[0].timecode) / 1000;
      console.log(
        `      ${parsed.clusters.length} clusters, ${blocks} blocks checked for order; ` +
          `video ${(video.length / spanS).toFixed(1)} frames/s, a keyframe every ${(spanS / Math.max(1, parsed.clusters.length - 1)).toFixed(2)} s`,
      );
      expect(backwardsInClusters(parsed.clusters)).to.deep.equal([]);
      // And across clusters: the whole stream's timeline only goes forward.
      const times = parsed.clusters.flatMap((c) => c.blocks.map((b) => b.timecode));
      const back = times.findIndex((t, i) => i > 0 && t < times[i - 1]);
      expect(back, `block ${back} goes back in time`).to.equal(-1);
      for (const c of parsed.clusters) if (c.blocks.length > 0) expect(c.blocks[0].timecode).to.be.at.least(c.timecode);
    });
  });

  it('a WebSocket viewer of /live gets the stream description, the same init segment and the same clusters as an HTTP viewer', async () => {
    const httpViewer = new HttpViewer(`${relay.url}/live.webm`);
    const wsViewer = new WsViewer(`ws://127.0.0.1:${relay.port}/live`);
    try {
      await wsViewer.opened;
      await waitFor(
        'both viewers to receive 2 complete clusters',
        () => [httpViewer.body, Buffer.concat(wsViewer.messages.flatMap((m) => (m.binary ? [m.binary] : [])))].every((b) => parseStream(b).clusters.filter((c) => c.complete).length >= 2),
        30_000,
      );
    } finally {
      httpViewer.close();
      wsViewer.close();
    }
    const first = wsViewer.messages[0];
    expect(first.text, 'the first message is the stream description').to.be.a('string');
    const description = JSON.parse(first.text!) as { type: string; mimeType: string; tracks: { kind: string; codec: string }[] };
    expect(description.type).to.equal('stream');
    expect(description.mimeType).to.equal('video/webm; codecs="vp8,opus"');
    expect(description.tracks.map((t) => `${t.kind}:${t.codec}`)).to.deep.equal(['video:vp8', 'audio:opus']);
    expect(wsViewer.messages.slice(1).every((m) => m.binary), 'then binary messages only').to.equal(true);
    const ws = parseStream(Buffer.concat(wsViewer.messages.slice(1).map((m) => m.binary!)));
    const http = parseStream(httpViewer.body);
    expect(ws.errors).to.deep.equal([]);
    expect(ws.headers).to.equal(1);
    expect(ws.init!.equals(http.init!), 'same init segment').to.equal(true);
    expect(ws.clusters[0].blocks[0]).to.include({ video: true, keyframe: true });
    const run = overlap(http.clusters, ws.clusters);
    if (typeof run === 'string') expect.fail(run);
    expect(run.compared).to.be.at.least(2);
  });

  it('still runs exactly one encoder after all that', async () => {
    await waitFor('one encoder', () => gstChildren(relay.process.pid!).length === 1, 3000);
    const stats = await waitStats(relay.url, 'stats', () => true);
    expect(stats.encoderRestarts).to.equal(0);
  });
});
