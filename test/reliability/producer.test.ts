/**
 * Producer faults: an external producer on --ingest tcp:// or PUT /ingest goes away,
 * comes back, or comes back with other tracks. Asserted from the viewers' side.
 */
import { expect } from 'chai';
import { ffmpegErrors, trimToCompleteBlocks, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import {
  ffmpegProducer,
  gstProducer,
  HttpViewer,
  killTracked,
  logLines,
  sleep,
  spawnRelay,
  startTcpRelay,
  stopProcess,
  streamShape,
  waitStats,
  WsViewer,
  type RawRelay,
} from '../helpers/faults.js';

const EBML_MAGIC = Buffer.from([0x1a, 0x45, 0xdf, 0xa3]);
/** The binary messages of a WebSocket viewer from message `index` on, as one byte stream. */
const wsBytesFrom = (ws: WsViewer, index: number) => Buffer.concat(ws.messages.slice(index).flatMap((m) => (m.binary ? [m.binary] : [])));

const TOKEN = 'reliability-token-0123456789';

describe('reliability: producer faults', function () {
  this.timeout(90_000);
  let relay: RunningRelay | null = null;
  let raw: RawRelay | null = null;
  const viewers: { close(): void }[] = [];

  afterEach(async () => {
    for (const v of viewers.splice(0)) v.close();
    await killTracked();
    await relay?.stop('SIGKILL');
    relay = null;
    if (raw && raw.process.exitCode === null && raw.process.signalCode === null) raw.process.kill('SIGKILL');
    raw = null;
  });

  const httpViewer = (r: RunningRelay) => {
    const v = new HttpViewer(`${r.url}/live.webm`);
    viewers.push(v);
    return v;
  };
  const wsViewer = (r: RunningRelay) => {
    const v = new WsViewer(`ws://127.0.0.1:${r.port}/live`);
    viewers.push(v);
    return v;
  };

  it('incompatible restart (VP8 producer, then VP9): the HTTP response ends cleanly, WebSocket viewers get the new stream description and init segment', async () => {
    const { relay: started, ingestPort: port } = await startTcpRelay();
    relay = started;
    const vp8 = gstProducer(port, { videoCodec: 'vp8' });
    await waitLive(relay, 20_000);
    const http = httpViewer(relay);
    const ws = wsViewer(relay);
    await waitFor('both viewers to get media', () => http.bytes > 20_000 && ws.binaryBytes > 20_000, 15_000);
    await stopProcess(vp8.process, 'SIGINT');
    await waitStats(relay.url, 'the producer to be gone', (s) => s.ingest.state === 'waiting');
    expect(http.outcome, 'a same-track gap does not end the HTTP viewer').to.equal('open');

    gstProducer(port, { videoCodec: 'vp9' });
    await Promise.race([http.done, sleep(20_000)]);
    expect(http.outcome, 'HTTP viewer after the VP9 header').to.equal('end');
    const body = http.body;
    expect(trimToCompleteBlocks(body).length, 'the HTTP body ends on a whole block').to.equal(body.length);
    expect(streamShape(body).headers).to.equal(1);
    expect(ffmpegErrors(body)).to.deep.equal([]);

    await waitFor('a second stream description on the WebSocket', () => ws.streamMessages().length >= 2, 20_000);
    const [first, second] = ws.streamMessages();
    expect(first.mimeType).to.include('vp8');
    expect(second.mimeType).to.include('vp9');
    await waitFor('media after the new init segment', () => ws.messages.length > second.index + 3, 15_000);
    const init = ws.messages[second.index + 1];
    expect(init.binary, 'the message after the description is binary').to.be.instanceOf(Buffer);
    expect(init.binary!.subarray(0, 4).equals(EBML_MAGIC), 'init segment starts with the EBML header').to.equal(true);
    await waitFor('2 s of VP9 on the WebSocket', () => {
      const video = streamShape(wsBytesFrom(ws, second.index + 1)).times.get(1) ?? [];
      return video.length > 1 && video[video.length - 1] - video[0] > 2000;
    }, 15_000);
    const vp9 = trimToCompleteBlocks(wsBytesFrom(ws, second.index + 1));
    const shape = streamShape(vp9);
    expect(shape.headers).to.equal(1);
    expect(shape.backwards).to.deep.equal([]);
    expect(ffmpegErrors(vp9)).to.deep.equal([]);
    expect(ws.closeCode, 'WebSocket viewer stays connected').to.equal(null);
  });

  it('producer disconnects: /healthz 503, viewers kept through --producer-grace and fed by the next producer; closed once the grace runs out', async () => {
    const GRACE_S = 4;
    const { relay: started, ingestPort: port } = await startTcpRelay(['--producer-grace', String(GRACE_S)]);
    relay = started;
    const first = gstProducer(port);
    await waitLive(relay, 20_000);
    const http = httpViewer(relay);
    const ws = wsViewer(relay);
    await waitFor('both viewers to get media', () => http.bytes > 20_000 && ws.binaryBytes > 20_000, 15_000);

    first.process.kill('SIGKILL');
    const gone = Date.now();
    await waitFor('/healthz 503', async () => (await fetch(`${relay!.url}/healthz`)).status === 503, 3000);
    await sleep(Math.max(0, gone + (GRACE_S * 1000) / 2 - Date.now()));
    expect(http.outcome, 'HTTP viewer during the grace period').to.equal('open');
    expect(ws.closeCode, 'WebSocket viewer during the grace period').to.equal(null);
    expect((await waitStats(relay.url, 'stats', () => true)).viewers).to.equal(2);

    const httpBefore = http.bytes;
    const wsBefore = ws.binaryBytes;
    const second = gstProducer(port);
    await waitLive(relay, 15_000);
    await waitFor('both viewers to receive from the new producer', () => http.bytes > httpBefore + 50_000 && ws.binaryBytes > wsBefore + 50_000, 15_000);
    const shape = streamShape(trimToCompleteBlocks(http.body));
    expect(shape.headers, 'one header across the producer gap').to.equal(1);
    expect(shape.backwards).to.deep.equal([]);
    expect(ffmpegErrors(trimToCompleteBlocks(http.body))).to.deep.equal([]);
    expect(ws.streamMessages(), 'same tracks: no new stream description').to.have.length(1);

    second.process.kill('SIGKILL');
    const gone2 = Date.now();
    await Promise.race([Promise.all([http.done, ws.closed]), sleep(GRACE_S * 1000 + 8000)]);
    const httpAfter = (http.endedAt - gone2) / 1000;
    console.log(`      viewers closed ${httpAfter.toFixed(1)} s after the producer left (grace ${GRACE_S} s); ws close ${ws.closeCode} "${ws.closeReason}"`);
    expect(http.outcome, 'HTTP viewer after the grace period').to.equal('end');
    expect(ws.closeCode, 'WebSocket viewer after the grace period').to.equal(1001);
    expect(ws.closeReason).to.include('no producer');
    expect(httpAfter).to.be.at.least(GRACE_S - 0.5).and.below(GRACE_S + 5);
    expect((await waitStats(relay.url, 'no viewers', (s) => s.viewers === 0)).viewers).to.equal(0);
  });

  it('PUT /ingest: 404 without --ingest-token', async () => {
    relay = (await startTcpRelay()).relay;
    const response = await fetch(`${relay.url}/ingest`, { method: 'PUT', headers: { authorization: `Bearer ${TOKEN}` }, body: 'x' });
    expect(response.status).to.equal(404);
    expect((await waitStats(relay.url, 'stats', () => true)).ingest.producers).to.equal(0);
  });

  it('PUT /ingest: 401 for a wrong or missing token; an ffmpeg producer with the right one reaches the viewers', async () => {
    relay = (await startTcpRelay(['--ingest-token', TOKEN])).relay;
    for (const authorization of [`Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(0, -1)}`, 'Bearer ', TOKEN, `Basic ${TOKEN}`, undefined]) {
      const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
      const response = await fetch(`${relay.url}/ingest`, { method: 'PUT', headers, body: 'not webm' });
      expect(response.status, `Authorization: ${authorization}`).to.equal(401);
      expect(response.headers.get('www-authenticate')).to.equal('Bearer');
    }
    // The relay's stderr may arrive a moment after its answers.
    await waitFor('six refusals logged', () => logLines(relay!.log(), /PUT \/ingest .*refused/).length >= 6, 5000);
    expect(logLines(relay.log(), /PUT \/ingest .*refused/)).to.have.length(6);
    expect((await waitStats(relay.url, 'stats', () => true)).ingest.producers).to.equal(0);

    ffmpegProducer(`http://127.0.0.1:${relay.port}/ingest`, ['-method', 'PUT', '-headers', `Authorization: Bearer ${TOKEN}\r\n`]);
    await waitLive(relay, 20_000);
    const http = httpViewer(relay);
    const ws = wsViewer(relay);
    await waitFor('viewers to get 3 s of media', () => {
      const video = streamShape(trimToCompleteBlocks(http.body)).times.get(1) ?? [];
      return video.length > 0 && video[video.length - 1] - video[0] > 3000 && ws.binaryBytes > 20_000;
    }, 20_000);
    const body = trimToCompleteBlocks(http.body);
    expect(streamShape(body).headers).to.equal(1);
    expect(ffmpegErrors(body)).to.deep.equal([]);
    expect(ws.streamMessages()[0].mimeType).to.include('vp8');
    expect(logLines(relay.log(), /\[ingest\] live: http 127\.0\.0\.1:\d+: producer connected/)).to.have.length(1);
  });

  it('refuses a non-loopback --ingest tcp://0.0.0.0:9 at start-up with exit code 2', async () => {
    raw = spawnRelay(['--ingest', 'tcp://0.0.0.0:9']);
    const exit = await Promise.race([raw.exited, sleep(5000).then(() => null)]);
    expect(exit, raw.log()).to.not.equal(null);
    expect(exit!.code).to.equal(2);
    expect(raw.log()).to.match(/--ingest tcp:\/\/0\.0\.0\.0:9: .*loopback only/);
    expect(raw.log()).to.not.include('serving');
  });
});
