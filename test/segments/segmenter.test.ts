import { expect } from 'chai';
import http from 'node:http';
import type { SegmentIndex } from '../../src/protocol.js';
import { gstProducer, killTracked, stopProcess } from '../helpers/faults.js';
import { gstWebm } from '../helpers/media.js';
import { ffmpegErrors, sleep, waitFor } from '../helpers/relay.js';
import { startOrigin, type Origin } from './standalone.js';

interface Got {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** ms from the request to the response head, and to its end. */
  headMs: number;
  endMs: number;
}

export function get(url: string, timeoutMs = 20_000): Promise<Got> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    // Parsed by hand: new URL() would resolve `..` before the server could see it.
    const m = /^http:\/\/([^:/]+):(\d+)(\/.*)$/.exec(url)!;
    const request = http.get({ host: m[1], port: Number(m[2]), path: m[3], agent: false }, (res) => {
      const headMs = Date.now() - started;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), headMs, endMs: Date.now() - started }));
      res.once('error', reject);
    });
    request.setTimeout(timeoutMs, () => request.destroy(new Error(`${url}: no answer in ${timeoutMs} ms`)));
    request.on('error', reject);
  });
}

/** Reads a long response (a `/live.webm` viewer) until `stop()`. */
function collect(url: string): { bytes: () => Buffer; ended: Promise<void>; stop: () => void; head: Promise<void> } {
  const chunks: Buffer[] = [];
  let onHead!: () => void;
  const head = new Promise<void>((r) => (onHead = r));
  let request!: http.ClientRequest;
  const ended = new Promise<void>((resolve) => {
    request = http.get(url, { agent: false }, (res) => {
      onHead();
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', resolve);
      res.once('close', resolve);
    });
    request.on('error', () => resolve());
  });
  return { bytes: () => Buffer.concat(chunks), ended, stop: () => request.destroy(), head };
}

const IMMUTABLE = 'public, max-age=31536000, immutable';

describe('segments: the segmenter and its HTTP handlers (standalone origin)', function () {
  this.timeout(150_000);
  let origin: Origin | null = null;
  afterEach(async () => {
    await origin?.close();
    origin = null;
    await killTracked();
  });

  it('cuts a recorded GStreamer stream at every keyframe; init + segments is byte for byte what a /live.webm viewer gets', async () => {
    const media = gstWebm({ seconds: 5, keyframeInterval: 30, framerate: 30 });
    origin = await startOrigin();
    const viewer = collect(`${origin.url}/live.webm`);
    await viewer.head;
    const producer = origin.feed(media.bytes, 3000);

    const index = await get(`${origin.url}/live/index.json`);
    expect(index.status).to.equal(200);
    expect(index.headers['cache-control']).to.equal('public, max-age=0, s-maxage=1');
    const doc = JSON.parse(index.body.toString()) as SegmentIndex;
    expect(doc.segments.length).to.be.within(3, 5);
    expect(doc.partial!.seq).to.equal(doc.segments[doc.segments.length - 1].seq + 1);
    expect(doc.mimeType).to.match(/^video\/webm; codecs="vp8,opus"/);
    for (let i = 1; i < doc.segments.length; i++) {
      const [a, b] = [doc.segments[i - 1], doc.segments[i]];
      expect(b.seq).to.equal(a.seq + 1);
      expect(a.start + a.duration).to.be.closeTo(b.start, 0.0015);
      expect(a.duration).to.be.closeTo(1, 0.1);
    }
    expect(doc.targetDuration).to.be.closeTo(1, 0.1);

    // The segment being produced streams; it ends when the producer does.
    const base = `${origin.url}/live/`;
    const partial = get(base + doc.partial!.url);
    await sleep(200);
    producer.end();
    const last = await partial;
    expect(last.status).to.equal(200);
    expect(last.headers['content-length']).to.equal(undefined);
    expect(last.headers['transfer-encoding']).to.equal('chunked');
    expect(last.headers['cache-control']).to.equal(IMMUTABLE);

    const init = await get(base + doc.init);
    expect(init.status).to.equal(200);
    expect(init.headers['cache-control']).to.equal(IMMUTABLE);
    expect(Number(init.headers['content-length'])).to.equal(init.body.length);
    const parts = [init.body];
    for (const s of doc.segments) {
      const seg = await get(base + s.url);
      expect(seg.status).to.equal(200);
      expect(seg.headers['cache-control']).to.equal(IMMUTABLE);
      expect(seg.headers.etag).to.equal(`"${doc.epoch}-${s.seq}"`);
      expect(Number(seg.headers['content-length'])).to.equal(seg.body.length);
      expect(ffmpegErrors(Buffer.concat([init.body, seg.body])), `segment ${s.seq} alone decodes`).to.deep.equal([]);
      parts.push(seg.body);
    }
    parts.push(last.body);
    // Complete now: the same bytes, with a length.
    const again = await get(base + doc.partial!.url);
    expect(again.body.equals(last.body)).to.equal(true);
    expect(Number(again.headers['content-length'])).to.equal(last.body.length);

    await viewer.ended;
    const direct = viewer.bytes();
    const segmented = Buffer.concat(parts);
    expect(segmented.length).to.equal(direct.length);
    expect(segmented.equals(direct)).to.equal(true);
    expect(ffmpegErrors(segmented)).to.deep.equal([]);
  });

  it('live: parks the request for the next segment until it starts, streams it, and it matches a viewer that joined at its keyframe', async () => {
    origin = await startOrigin({ segments: { minParkMs: 6000, maxParkMs: 8000 } });
    const producer = gstProducer(origin.ingestPort);
    const o = origin;
    await waitFor('two segments', () => o.segmenter.segments.length >= 2, 45_000);
    const doc = JSON.parse((await get(`${o.url}/live/index.json`)).body.toString()) as SegmentIndex;
    const base = `${o.url}/live/${doc.epoch}/`;
    const next = doc.partial!.seq + 1;

    // The viewer joins now (at the latest keyframe: the partial segment, or the next one if it just began).
    const viewer = collect(`${o.url}/live.webm`);
    const parked = get(`${base}${next}.webm`);
    const tooFar = await get(`${base}${next + 2}.webm`);
    expect(tooFar.status).to.equal(404);
    expect(tooFar.headers['cache-control']).to.equal('public, max-age=1');

    // Once `next` is being produced, `next + 1` is the one to wait for.
    await waitFor('the next segment to start', () => o.segmenter.partial?.seq === next);
    const afterNext = get(`${base}${next + 1}.webm`);
    const got = await parked;
    expect(got.status).to.equal(200);
    expect(got.headers['transfer-encoding']).to.equal('chunked');
    // It waited for its segment to start (up to a GOP), then streamed until the next keyframe.
    expect(got.endMs - got.headMs).to.be.greaterThan(500);
    const then = await afterNext;
    expect(then.status).to.equal(200);
    const complete = await get(`${base}${next}.webm`);
    expect(complete.body.equals(got.body)).to.equal(true);
    expect(Number(complete.headers['content-length'])).to.equal(got.body.length);

    viewer.stop();
    const init = (await get(`${base}init.webm`)).body;
    const direct = viewer.bytes();
    expect(direct.subarray(0, init.length).equals(init), `viewer got ${direct.length} bytes, init is ${init.length}: ${direct.subarray(0, 16).toString('hex')} vs ${init.subarray(0, 16).toString('hex')}`).to.equal(true);
    // Find the segment the viewer started at; from there on the bytes are the same.
    const rest = direct.subarray(init.length);
    let at = -1;
    for (let seq = doc.partial!.seq; seq <= next; seq++) {
      const s = seq === next ? got.body : (await get(`${base}${seq}.webm`)).body;
      if (rest.subarray(0, s.length).equals(s)) at = seq;
    }
    expect(at, 'the viewer starts at a segment boundary').to.be.greaterThan(-1);
    const chain: Buffer[] = [];
    for (let seq = at; seq <= next + 1; seq++) chain.push(seq === next ? got.body : seq === next + 1 ? then.body : (await get(`${base}${seq}.webm`)).body);
    const segmented = Buffer.concat(chain);
    const n = Math.min(segmented.length, rest.length);
    expect(n).to.be.greaterThan(got.body.length);
    expect(rest.subarray(0, n).equals(segmented.subarray(0, n))).to.equal(true);

    // No producer: the index says so, and a parked request gives up with 503 and Retry-After.
    await stopProcess(producer.process);
    await waitFor('the producer to be gone', () => !o.segmenter.live);
    const idle = await get(`${o.url}/live/index.json`);
    expect(idle.status).to.equal(503);
    expect(idle.headers['cache-control']).to.equal('public, max-age=1');
    const lastSeq = o.segmenter.segments[o.segmenter.segments.length - 1].seq;
    const gaveUp = await get(`${base}${lastSeq + 1}.webm`);
    expect(gaveUp.status).to.equal(503);
    expect(gaveUp.headers['retry-after']).to.equal('1');
    expect(gaveUp.headers['cache-control']).to.equal('public, max-age=1');
    expect(gaveUp.headMs).to.be.within(5900, 15_000);
    expect(o.segmenter.stats().requests.parkTimeouts).to.equal(1);
  });

  it('answers junk URLs with 404 at once, cacheable for a second', async () => {
    const media = gstWebm({ seconds: 3 });
    origin = await startOrigin();
    origin.feed(media.bytes);
    const epoch = origin.segmenter.epoch!;
    const junk = [
      `/live/${epoch}/abc.webm`,
      `/live/${epoch}/-1.webm`,
      `/live/${epoch}/01.webm`,
      `/live/${epoch}/1.5.webm`,
      `/live/${epoch}/${'9'.repeat(40)}.webm`,
      `/live/${epoch}/1e3.webm`,
      `/live/../1.webm`,
      `/live/${epoch}/../0.webm`,
      `/live/%2e%2e/0.webm`,
      `/live/${epoch}/999.webm`,
      `/live/zzzzzz/0.webm`,
      `/live/ABC/init.webm`,
      `/live/${'x'.repeat(13)}/init.webm`,
      `/other/${epoch}/0.webm`,
      `/other/index.json`,
      `/live/${epoch}/0.webm?${'q'.repeat(5000)}`,
      `/live/index.json?${'q'.repeat(5000)}`,
    ];
    const before = process.memoryUsage().rss;
    for (const path of junk) {
      const r = await get(origin.url + path);
      expect(r.status, path).to.equal(404);
      expect(r.headers['cache-control'], path).to.equal('public, max-age=1');
      expect(r.headMs, path).to.be.below(1000);
    }
    expect(origin.segmenter.parkedCount).to.equal(0);
    expect(process.memoryUsage().rss - before).to.be.below(32 << 20);
    // A short query string is ignored: players may bust their own caches.
    expect((await get(`${origin.url}/live/${epoch}/init.webm?x=1`)).status).to.equal(200);
  });

  it('keeps the window in time and in bytes, and drops a segment that outgrows the byte bound', async () => {
    const media = gstWebm({ seconds: 8, keyframeInterval: 15 });
    origin = await startOrigin({ segments: { windowSeconds: 2 } });
    origin.feed(media.bytes).end();
    const s = origin.segmenter;
    const first = s.segments[0];
    const newest = s.segments[s.segments.length - 1];
    const spanS = s.seconds(newest.startTicks + newest.durationTicks - (first.startTicks + first.durationTicks));
    expect(spanS).to.be.below(2);
    expect(s.segments.length).to.be.within(3, 5);
    expect((await get(`${origin.url}/live/${s.epoch}/0.webm`)).status).to.equal(404);
    expect((await get(`${origin.url}/live/${s.epoch}/${newest.seq}.webm`)).status).to.equal(200);
    await origin.close();

    // Bytes: no more than maxBytes held, whatever the window says.
    const segmentBytes = newest.bytes;
    origin = await startOrigin({ segments: { windowSeconds: 60, maxBytes: segmentBytes * 3 } });
    origin.feed(media.bytes).end();
    expect(origin.segmenter.stats().bytes - origin.segmenter.init!.segment.bytes.length).to.be.at.most(segmentBytes * 3);
    expect(origin.segmenter.segments.length).to.be.within(1, 4);
    await origin.close();

    // A segment larger than the bound is given up: nothing served, nothing held, no crash.
    origin = await startOrigin({ segments: { maxBytes: 2000 } });
    origin.feed(media.bytes).end();
    expect(origin.segmenter.stats().oversized).to.be.greaterThan(0);
    expect(origin.segmenter.stats().bytes - origin.segmenter.init!.segment.bytes.length).to.be.at.most(2000);
  });

  it('a new init segment (other tracks) or a new process gives a new epoch; the old one is gone', async () => {
    origin = await startOrigin();
    origin.feed(gstWebm({ seconds: 2, videoCodec: 'vp8' }).bytes).end();
    const first = origin.segmenter.epoch!;
    expect((await get(`${origin.url}/live/${first}/init.webm`)).status).to.equal(200);
    origin.feed(gstWebm({ seconds: 2, videoCodec: 'vp9' }).bytes).end();
    const second = origin.segmenter.epoch!;
    expect(second).to.not.equal(first);
    expect((await get(`${origin.url}/live/${first}/init.webm`)).status).to.equal(404);
    expect((await get(`${origin.url}/live/${first}/0.webm`)).status).to.equal(404);
    const init = await get(`${origin.url}/live/${second}/init.webm`);
    expect(init.body.toString('latin1')).to.contain('V_VP9');
    await origin.close();
    origin = await startOrigin();
    origin.feed(gstWebm({ seconds: 2, videoCodec: 'vp9' }).bytes).end();
    expect(origin.segmenter.epoch).to.not.equal(second);
  });

  it('bounds parked requests, refuses the rest with 503, and forgets clients that hang up', async () => {
    origin = await startOrigin({ segments: { maxParked: 1000, minParkMs: 60_000, maxParkMs: 60_000 } });
    const producer = origin.feed(gstWebm({ seconds: 2 }).bytes);
    const o = origin;
    const next = `${o.url}/live/${o.segmenter.epoch}/${o.segmenter.partial!.seq + 1}.webm`;
    const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
    const requests: http.ClientRequest[] = [];
    const refused: number[] = [];
    for (let i = 0; i < 1010; i++) {
      const r = http.get(next, { agent }, (res) => {
        refused.push(res.statusCode ?? 0);
        res.resume();
      });
      r.on('error', () => {});
      requests.push(r);
    }
    await waitFor('1000 parked', () => o.segmenter.parkedCount === 1000 && refused.length === 10, 45_000);
    expect(refused.every((s) => s === 503)).to.equal(true);
    for (const r of requests) r.destroy();
    await waitFor('parked requests released', () => o.segmenter.parkedCount === 0, 30_000);
    producer.end();
    agent.destroy();
  });
});
