import { expect } from 'chai';
import http from 'node:http';
import { gstProducer, killTracked } from '../helpers/faults.js';
import { sleep, waitFor } from '../helpers/relay.js';
import { fetchIndex, fetchStreamed, readSegments, type ReaderResult } from './readers.js';
import { startOrigin, type Origin } from './standalone.js';
import { startVarnish, type Varnish } from './varnish.js';

describe('segments: a Varnish tier (deploy/varnish/webm-relay.vcl, real varnishd)', function () {
  this.timeout(120_000);
  let origin: Origin | null = null;
  let varnish: Varnish | null = null;
  const agents: http.Agent[] = [];

  afterEach(async () => {
    for (const a of agents.splice(0)) a.destroy();
    await varnish?.stop();
    varnish = null;
    await origin?.close();
    origin = null;
    await killTracked();
  });

  async function liveOriginBehindVarnish(): Promise<{ o: Origin; v: Varnish }> {
    const o = await startOrigin();
    origin = o;
    gstProducer(o.ingestPort);
    await waitFor('the first complete segment', () => o.segmenter.segments.length >= 1, 20_000);
    const v = await startVarnish(o.port);
    varnish = v;
    return { o, v };
  }

  it('200 segment readers get the same bytes as a direct reader while the relay serves each segment URL once', async () => {
    const { o, v } = await liveOriginBehindVarnish();
    const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
    agents.push(agent);
    const readers = 200;
    const count = 3;
    const results = await Promise.all(Array.from({ length: readers }, () => readSegments(`${v.url}/live/`, count, agent)));

    // What the origin was asked for, before the direct reads below add to it.
    const asked = new Map(o.requests);
    const segmentPaths = [...asked.keys()].filter((p) => /^\/live\/[0-9a-z]+\/\d+\.webm$/.test(p));
    const epoch = results[0].epoch;
    expect(results.every((r) => r.epoch === epoch)).to.equal(true);
    const seqs = new Set<number>();
    for (const r of results) for (const seq of r.segments.keys()) seqs.add(seq);
    expect(segmentPaths.length).to.equal(seqs.size);
    for (const p of segmentPaths) expect(asked.get(p), p).to.equal(1);
    expect(asked.get(`/live/${epoch}/init.webm`)).to.equal(1);
    // 200 readers read the index once each, within a couple of seconds.
    expect(asked.get('/live/index.json')).to.be.at.most(5);

    // Every reader's bytes are the direct bytes.
    const direct = new Map<number, Buffer>();
    for (const seq of seqs) direct.set(seq, (await fetchStreamed(`${o.url}/live/${epoch}/${seq}.webm`, false)).body);
    const init = (await fetchStreamed(`${o.url}/live/${epoch}/init.webm`, false)).body;
    let compared = 0;
    for (const r of results) {
      expect(r.init.equals(init)).to.equal(true);
      for (const [seq, got] of r.segments) {
        expect(got.body.equals(direct.get(seq)!), `segment ${seq}`).to.equal(true);
        compared++;
      }
    }
    expect(compared).to.equal(readers * count);
    // Streamed, not stored and forwarded: the segments after the first were asked for
    // before they began, and their bytes came while the relay produced them (about a second).
    const spans: number[] = [];
    for (const r of results) for (const [seq, got] of [...r.segments].slice(1)) if (seq > 0) spans.push(got.endAt - got.headAt);
    spans.sort((a, b) => a - b);
    expect(spans[Math.floor(spans.length / 2)], 'median ms from head to end of a streamed segment').to.be.greaterThan(400);
    // The relay's own counters agree with its access log.
    for (const [seq, requests] of o.segmenter.stats().perSegment) {
      if (seqs.has(seq)) expect(requests, `segment ${seq}`).to.equal(2); // one through Varnish, one direct just now
    }
  });

  it('index.json under load: one origin request per second, however many readers', async () => {
    const { o, v } = await liveOriginBehindVarnish();
    const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
    agents.push(agent);
    const before = o.requests.get('/live/index.json') ?? 0;
    const started = Date.now();
    let answered = 0;
    await Promise.all(
      Array.from({ length: 200 }, async () => {
        for (let i = 0; i < 10; i++) {
          const index = await fetchIndex(`${v.url}/live/`, agent);
          expect(index.partial).to.not.equal(null);
          answered++;
          await sleep(200 + Math.random() * 100);
        }
      }),
    );
    const seconds = (Date.now() - started) / 1000;
    const originRequests = (o.requests.get('/live/index.json') ?? 0) - before;
    expect(answered).to.equal(2000);
    expect(originRequests).to.be.at.most(Math.ceil(seconds) + 2);
  });

  it('a 404 is cached for a second and a segment URL is never turned into hit-for-miss', async () => {
    const { o, v } = await liveOriginBehindVarnish();
    const index = await fetchIndex(`${v.url}/live/`, false);
    const tooFar = `/live/${index.epoch}/${index.partial!.seq + 3}.webm`;
    const a = await fetchStreamed(v.url + tooFar, false);
    const b = await fetchStreamed(v.url + tooFar, false);
    expect([a.status, b.status]).to.deep.equal([404, 404]);
    expect(b.headers['x-cache']).to.equal('hit');
    expect(o.requests.get(tooFar)).to.equal(1);
    // Once it is the next segment, 50 requests for it are coalesced into one origin request.
    await waitFor('the 404 to expire and the segment to be next', () => o.segmenter.partial!.seq + 1 >= index.partial!.seq + 3, 10_000);
    await sleep(1100);
    const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
    agents.push(agent);
    const all = await Promise.all(Array.from({ length: 50 }, () => fetchStreamed(v.url + tooFar, agent)));
    expect(all.every((r) => r.status === 200)).to.equal(true);
    expect(o.requests.get(tooFar)).to.equal(2);
  });

  it('Varnish killed mid-segment: readers see a broken body, not a short segment; a new Varnish serves them again', async () => {
    const { o, v } = await liveOriginBehindVarnish();
    const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
    agents.push(agent);
    const index = await fetchIndex(`${v.url}/live/`, agent);
    const next = index.partial!.seq + 1;
    const inFlight = Array.from({ length: 20 }, () =>
      fetchStreamed(`${v.url}/live/${index.epoch}/${next}.webm`, agent).then(
        (r) => ({ ok: true as const, r }),
        (error: Error) => ({ ok: false as const, error }),
      ),
    );
    await waitFor('the next segment to be streaming', () => o.segmenter.partial?.seq === next && (o.segmenter.partial?.bytes ?? 0) > 0, 10_000);
    await sleep(200);
    await v.kill();
    const outcomes = await Promise.all(inFlight);
    expect(outcomes.filter((x) => x.ok).length, 'no reader takes a cut-off segment as whole').to.equal(0);

    varnish = await startVarnish(o.port, { port: v.port });
    // A fresh agent: the old one's sockets went to the Varnish that was killed.
    const fresh = new http.Agent({ keepAlive: true, maxSockets: Infinity });
    agents.push(fresh);
    const again: ReaderResult = await readSegments(`${varnish.url}/live/`, 2, fresh);
    expect(again.segments.size).to.equal(2);
    for (const [seq, got] of again.segments) {
      const direct = await fetchStreamed(`${o.url}/live/${again.epoch}/${seq}.webm`, false);
      expect(got.body.equals(direct.body)).to.equal(true);
    }
  });
});
