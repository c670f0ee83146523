/**
 * Edge mode: a second relay pulls the first one's /live.webm and serves its own viewers
 * the same stream.
 */
import { expect } from 'chai';
import { HttpViewer, gstChildren, waitStats } from '../helpers/faults.js';
import { startRelay, trimToCompleteBlocks, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { decodeErrors, mapLimit, overlap, parseStream, shutdown, sleep } from '../helpers/viewers.js';

describe('relay: edge (--ingest http://ORIGIN/live.webm)', function () {
  this.timeout(90_000);
  let origin: RunningRelay | null = null;
  let edge: RunningRelay | null = null;

  before(async () => {
    origin = await startRelay(['--width', '320', '--height', '240', '--video-bitrate', '500']);
    await waitLive(origin, 20_000);
    edge = await startRelay(['--ingest', `${origin.url}/live.webm`]);
    await waitLive(edge, 15_000);
  });

  after(async () => {
    await shutdown(edge);
    await shutdown(origin);
  });

  it('serves the origin\'s stream: same init segment and tracks, the same clusters byte for byte, decodable; /healthz 200', async () => {
    const o = origin!;
    const e = edge!;
    expect((await fetch(`${e.url}/healthz`)).status).to.equal(200);
    expect(gstChildren(e.process.pid!), 'the edge runs no encoder').to.deep.equal([]);
    const originStats = await waitStats(o.url, 'the edge as the origin\'s one viewer', (s) => s.viewers === 1, 5000);
    expect(originStats.viewersByTransport.http).to.equal(1);

    // An origin viewer, and two edge viewers that join just after it; all watch until each edge viewer has 3 whole clusters.
    const originViewer = new HttpViewer(`${o.url}/live.webm`);
    await sleep(500);
    const edgeViewers = [new HttpViewer(`${e.url}/live.webm`), new HttpViewer(`${e.url}/live.webm`)];
    try {
      await waitFor('3 complete clusters at each edge viewer', () => edgeViewers.every((v) => parseStream(v.body).clusters.filter((c) => c.complete).length >= 3), 30_000);
    } finally {
      for (const v of edgeViewers) v.close();
      originViewer.close();
    }
    const fromEdge = edgeViewers.map((v) => ({ status: v.status, body: v.body }));
    const originCapture = { body: originViewer.body };
    const edgeStats = await waitStats(e.url, 'stats', () => true);
    console.log(`      edge: mimeType ${edgeStats.mimeType}, ingest ${edgeStats.ingest.bytesIn} bytes from ${edgeStats.ingest.producer}; normalizer ${JSON.stringify(edgeStats.normalizer)}`);

    const a = parseStream(originCapture.body);
    for (const [i, c] of fromEdge.entries()) {
      expect(c.status).to.equal(200);
      const b = parseStream(c.body);
      expect(b.errors).to.deep.equal([]);
      expect(b.info!.mimeType).to.equal(a.info!.mimeType);
      const tracks = (s: typeof a) => s.info!.tracks.map((t) => ({ number: t.number, kind: t.kind, codecId: t.codecId, width: t.width, height: t.height, sampleRate: t.sampleRate, channels: t.channels }));
      expect(tracks(b)).to.deep.equal(tracks(a));
      expect(tracks(b).map((t) => t.codecId)).to.deep.equal(['V_VP8', 'A_OPUS']);
      expect(b.init!.equals(a.init!), `edge viewer ${i}: the origin's init segment`).to.equal(true);
      expect(b.clusters[0].blocks[0]).to.include({ video: true, keyframe: true });
      const run = overlap(a.clusters, b.clusters);
      if (typeof run === 'string') expect.fail(`edge viewer ${i} and an origin viewer: ${run}`);
      console.log(`      edge viewer ${i}: ${b.clusters.length} clusters, ${run.compared} identical to the origin viewer's`);
      expect(run.compared).to.be.greaterThan(1);
    }
    const errors = await mapLimit(fromEdge, 2, (c) => decodeErrors(trimToCompleteBlocks(c.body)));
    errors.forEach((lines, i) => expect(lines, `decoding edge viewer ${i}`).to.deep.equal([]));
  });
});
