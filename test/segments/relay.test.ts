import { expect } from 'chai';
import http from 'node:http';
import type { SegmentIndex } from '../../src/protocol.js';
import type { SegmentStats } from '../../src/protocol.js';
import { gstProducer, killTracked, vmRssKb } from '../helpers/faults.js';
import { ffmpegErrors, freePort, getJson, sleep, startRelay, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { fetchStreamed } from './readers.js';

const segmentStats = async (relay: RunningRelay): Promise<SegmentStats> =>
  (await getJson<{ segments: SegmentStats }>(`${relay.url}/api/streams/live`)).segments;

/** GET with the path sent as written (no URL normalisation). */
function getRaw(port: number, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; ms: number }> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        res.resume();
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, ms: Date.now() - started }));
      })
      .on('error', reject);
  });
}

describe('segments: in the relay (real process)', function () {
  this.timeout(180_000);
  let relay: RunningRelay | null = null;

  afterEach(async () => {
    await relay?.stop();
    relay = null;
    await killTracked();
  });

  it('init + segments N, N+1, ... are byte for byte what a /live.webm viewer gets from the keyframe of N on', async () => {
    relay = await startRelay(['--width', '320', '--height', '240', '--video-bitrate', '400', '--segment-window', '20']);
    const r = relay;
    await waitLive(r, 45_000);
    await waitFor('a complete segment', async () => (await segmentStats(r)).segments >= 1, 45_000);
    const viewerChunks: Buffer[] = [];
    const viewer = http.get(`${r.url}/live.webm`, { agent: false }, (res) => res.on('data', (c: Buffer) => viewerChunks.push(c)));
    viewer.on('error', () => {});
    const index = await getJson<SegmentIndex>(`${r.url}/live/index.json`);
    const base = `${r.url}/live/`;
    // Read from the segment being produced until three more have completed.
    const bodies = new Map<number, Buffer>();
    let seq = index.partial!.seq;
    let next = fetchStreamed(`${base}${index.epoch}/${seq}.webm`, false);
    for (let i = 0; i < 4; i++) {
      const got = await next;
      expect(got.status).to.equal(200);
      next = fetchStreamed(`${base}${index.epoch}/${seq + 1}.webm`, false);
      bodies.set(seq, got.body);
      seq++;
    }
    await next.catch(() => {});
    viewer.destroy();
    const init = (await fetchStreamed(base + index.init, false)).body;
    const direct = Buffer.concat(viewerChunks);
    expect(direct.subarray(0, init.length).equals(init)).to.equal(true);
    const rest = direct.subarray(init.length);
    const first = [...bodies.keys()].find((s) => rest.subarray(0, bodies.get(s)!.length).equals(bodies.get(s)!));
    expect(first, 'the viewer starts where a segment starts').to.not.equal(undefined);
    const chain = Buffer.concat([...bodies].filter(([s]) => s >= first!).map(([, b]) => b));
    const n = Math.min(chain.length, rest.length);
    expect(n).to.be.greaterThan(bodies.get(first!)!.length);
    expect(rest.subarray(0, n).equals(chain.subarray(0, n))).to.equal(true);
    expect(ffmpegErrors(Buffer.concat([init, chain]))).to.deep.equal([]);
    // The relay's stats count origin requests per segment URL.
    const stats = await segmentStats(r);
    for (const [s, requests] of stats.perSegment) if (bodies.has(s)) expect(requests, `segment ${s}`).to.equal(1);
    const window = (await getJson<SegmentIndex>(`${r.url}/live/index.json`)).segments;
    const span = window[window.length - 1].start + window[window.length - 1].duration - (window[0].start + window[0].duration);
    expect(span).to.be.below(20);
  });

  it('1000 parked requests for the next segment cost bounded memory and are released when their clients hang up', async () => {
    const ingestPort = await freePort();
    relay = await startRelay(['--ingest', `tcp://127.0.0.1:${ingestPort}`]);
    const r = relay;
    // GOPs of 4 s: a request for the next segment may wait 3 x 4 s.
    const producer = gstProducer(ingestPort, { keyframeIntervalS: 4 });
    await waitFor('two complete segments', async () => (await segmentStats(r)).segments >= 2, 60_000);
    // Hold the producer: the stream stays connected, the next segment does not start.
    const stats0 = await segmentStats(r);
    producer.process.kill('SIGSTOP');
    try {
      const index = await getJson<SegmentIndex>(`${r.url}/live/index.json`);
      const nextUrl = `${r.url}/live/${index.epoch}/${index.partial!.seq + 1}.webm`;
      await sleep(300);
      const rssBefore = vmRssKb(r.process.pid!);
      const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
      const requests: http.ClientRequest[] = [];
      let answered = 0;
      for (let i = 0; i < 1000; i++) {
        const req = http.get(nextUrl, { agent }, (res) => {
          answered++;
          res.resume();
        });
        req.on('error', () => {});
        requests.push(req);
      }
      await waitFor('1000 parked', async () => (await segmentStats(r)).parked === 1000, 30_000);
      const rssParked = vmRssKb(r.process.pid!);
      const perRequestKb = (rssParked - rssBefore) / 1000;
      if (process.env.SEGMENTS_FIGURES) console.log(`parked: RSS ${rssBefore} -> ${rssParked} kB, ${perRequestKb} kB per request`);
      expect(answered).to.equal(0);
      // Sockets and request objects, nothing per request that grows: a few tens of KB at most.
      expect(perRequestKb, `RSS ${rssBefore} -> ${rssParked} kB`).to.be.below(64);
      for (const req of requests) req.destroy();
      await waitFor('parked requests released', async () => (await segmentStats(r)).parked === 0, 30_000);
      agent.destroy();
      expect((await segmentStats(r)).requests.parkTimeouts).to.equal(stats0.requests.parkTimeouts);
    } finally {
      producer.process.kill('SIGCONT');
    }
    // The stream goes on.
    await waitFor('segments again', async () => (await getRaw(r.port, '/live/index.json')).status === 200, 15_000);
  });

  it('junk segment URLs get a 404 at once, cacheable for a second; other routes are untouched', async () => {
    relay = await startRelay(['--width', '320', '--height', '240']);
    const r = relay;
    await waitLive(r, 45_000);
    await waitFor('a segment', async () => (await segmentStats(r)).partial !== null, 45_000);
    const { epoch } = await segmentStats(r);
    for (const path of [
      `/live/${epoch}/x.webm`,
      `/live/${epoch}/${'1'.repeat(40)}.webm`,
      `/live/../0.webm`,
      `/live/${epoch}/../../etc/passwd.webm`,
      `/live/zzzz/0.webm`,
      `/nosuchstream/index.json`,
      `/live/${epoch}/0.webm?${'a'.repeat(6000)}`,
    ]) {
      const got = await getRaw(r.port, path);
      expect(got.status, path).to.equal(404);
      expect(got.headers['cache-control'], path).to.equal('public, max-age=1');
      expect(got.ms, path).to.be.below(2000);
    }
    // Counted where an operator looks: the relay's stats and /metrics (URLs of a stream it has).
    expect((await segmentStats(r)).requests.notFound).to.be.at.least(5);
    const metrics = await (await fetch(`${r.url}/metrics`)).text();
    expect(Number(/^webm_relay_segment_not_found_total\{stream="live"\} (\d+)$/m.exec(metrics)?.[1])).to.be.at.least(5);
    expect(metrics).to.match(/^webm_relay_segment_requests_parked\{stream="live"\} 0$/m);
    expect((await getRaw(r.port, '/live/')).status).to.equal(200);
    const index = await getRaw(r.port, '/live/index.json');
    expect(index.status).to.equal(200);
    expect(index.headers['cache-control']).to.equal('public, max-age=0, s-maxage=1');
  });
});
