/**
 * The relay behind nginx, HAProxy and Varnish with the configurations in deploy/: the
 * answers' headers, the stream's first byte and lag next to a direct viewer's (video
 * with audio, and audio alone), TLS, and the WebSocket player protocol.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { startTcpRelay, WsViewer } from '../helpers/faults.js';
import { startRelay, trimToCompleteBlocks, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { decodeErrors, mapLimit, shutdown, sleep } from '../helpers/viewers.js';
import {
  addedLag,
  firstMediaMs,
  get,
  median,
  PROXY_KINDS,
  cleanUpProxies,
  startHaproxy,
  startNginx,
  startProxy,
  stopProxies,
  TimedViewer,
  type ProxyKind,
  type RunningProxy,
} from './harness.js';

/** What a proxy may add to the first byte and to the lag of every block. */
const ALLOWED_MS = 50;
/** Routes measured to show what a missing config line costs: not held to ALLOWED_MS. */
const CONTROLS = new Set(['haproxy, Nagle', 'nginx, buffered']);

interface Measured {
  label: string;
  firstMediaMs: number;
  lag: { medianMs: number; p95Ms: number; blocks: number };
  /** Each round's median/p95 added lag, ms. */
  rounds: string;
  viewer: TimedViewer;
}

/**
 * Watches `seconds` through direct and proxied URLs at the same time, `rounds` times,
 * and compares each with the direct viewer of the same round and transport. A proxy's
 * figure is its best round: a load spike from other processes on the machine hits one
 * round, a proxy's setting (buffering, Nagle) hits every round.
 */
async function measure(direct: { http: string; ws: string }, routes: { label: string; url: string }[], rounds: number, seconds: number, maxRounds = rounds + 3): Promise<Measured[]> {
  const results = new Map<string, { first: number[]; lags: number[]; p95: number[]; blocks: number; viewer: TimedViewer }>();
  const note = (label: string, viewer: TimedViewer, first: number, lag: { medianMs: number; p95Ms: number; blocks: number }) => {
    const entry = results.get(label) ?? { first: [], lags: [], p95: [], blocks: 0, viewer };
    entry.first.push(first);
    entry.lags.push(lag.medianMs);
    entry.p95.push(lag.p95Ms);
    entry.blocks += lag.blocks;
    entry.viewer = viewer;
    results.set(label, entry);
  };
  // Within the limit in some round: once every route has such a round (and `rounds` are done), stop.
  const passed = (label: string) => {
    const r = results.get(label);
    return !!r && r.first.some((f, i) => f <= ALLOWED_MS && r.lags[i] <= ALLOWED_MS);
  };
  const checked = routes.filter((r) => !CONTROLS.has(r.label));
  for (let round = 0; round < maxRounds && (round < rounds || !checked.every((r) => passed(r.label))); round++) {
    const refs = { http: new TimedViewer(`${direct.http}/live.webm`), ws: new TimedViewer(`${direct.ws}/live`) };
    const viewers = routes.map((r) => ({ route: r, viewer: new TimedViewer(r.url) }));
    await sleep(seconds * 1000);
    for (const v of [refs.http, refs.ws, ...viewers.map((v) => v.viewer)]) v.stop();
    note('direct http', refs.http, firstMediaMs(refs.http), { medianMs: 0, p95Ms: 0, blocks: 0 });
    note('direct ws', refs.ws, firstMediaMs(refs.ws), { medianMs: 0, p95Ms: 0, blocks: 0 });
    for (const { route, viewer } of viewers) {
      const ref = viewer.kind === 'ws' ? refs.ws : refs.http;
      note(route.label, viewer, firstMediaMs(viewer) - firstMediaMs(ref), addedLag(ref, viewer));
    }
  }
  // A route's figures are those of its best round: the one with the least lag, then the earliest first media.
  const bestRound = (r: { first: number[]; lags: number[] }) =>
    r.lags.map((_, i) => i).sort((a, b) => Math.max(r.first[a], r.lags[a]) - Math.max(r.first[b], r.lags[b]) || r.lags[a] - r.lags[b])[0];
  return [...results].map(([label, r]) => ({
    label,
    firstMediaMs: label.startsWith('direct') ? median(r.first) : r.first[bestRound(r)],
    lag: { medianMs: r.lags[bestRound(r)], p95Ms: r.p95[bestRound(r)], blocks: r.blocks },
    rounds: r.lags.map((lag, i) => `${r.first[i]}:${lag}/${r.p95[i]}`).join(' '),
    viewer: r.viewer,
  }));
}

function routesThrough(proxies: Record<ProxyKind, RunningProxy>): { label: string; url: string }[] {
  const routes: { label: string; url: string }[] = [];
  for (const kind of PROXY_KINDS) {
    const p = proxies[kind];
    routes.push({ label: `${kind} http`, url: `${p.url}/live.webm` });
    routes.push({ label: `${kind} ws`, url: `${p.url.replace('http', 'ws')}/live` });
    if (p.tlsUrl) routes.push({ label: `${kind} https`, url: `${p.tlsUrl}/live.webm` });
  }
  return routes;
}

async function checkMeasured(results: Measured[]): Promise<void> {
  for (const r of results) {
    console.log(`      ${r.label.padEnd(14)} first media ${r.label.startsWith('direct') ? `${r.firstMediaMs} ms` : `${r.firstMediaMs >= 0 ? '+' : ''}${r.firstMediaMs} ms vs direct`}, added lag median ${r.lag.medianMs} ms, p95 ${r.lag.p95Ms} ms (${r.lag.blocks} blocks; rounds first:median/p95 ${r.rounds})`);
  }
  for (const r of results.filter((r) => !r.label.startsWith('direct'))) {
    expect(r.lag.blocks, `${r.label}: blocks seen by it and the direct viewer`).to.be.greaterThan(50);
    expect(r.firstMediaMs, `${r.label}: first media later than direct`).to.be.at.most(ALLOWED_MS);
    expect(r.lag.medianMs, `${r.label}: median lag added`).to.be.at.most(ALLOWED_MS);
  }
  const errors = await mapLimit(results, 2, (r) => decodeErrors(trimToCompleteBlocks(r.viewer.body())));
  results.forEach((r, i) => expect(errors[i], `${r.label}: ffmpeg -v error`).to.deep.equal([]));
}

async function startProxies(backend: number): Promise<Record<ProxyKind, RunningProxy>> {
  const started = await Promise.all(PROXY_KINDS.map((kind) => startProxy(kind, [backend])));
  return Object.fromEntries(started.map((p) => [p.kind, p])) as Record<ProxyKind, RunningProxy>;
}

describe('proxies: the stream through nginx, HAProxy and Varnish (deploy/ configs)', function () {
  this.timeout(120_000);
  let relay: RunningRelay | null = null;
  let proxies: Record<ProxyKind, RunningProxy> | null = null;

  before(async () => {
    relay = await startRelay(['--width', '320', '--height', '240', '--video-bitrate', '500']);
    await waitLive(relay, 20_000);
    proxies = await startProxies(relay.port);
  });

  after(async () => {
    await stopProxies(Object.values(proxies ?? {}));
    await shutdown(relay);
    await cleanUpProxies();
  });

  it('every answer through every proxy says whether it may be kept; /live.webm is unbuffered; a plain GET of /live is a 426', async () => {
    for (const kind of PROXY_KINDS) {
      const base = proxies![kind].url;
      const stream = new TimedViewer(`${base}/live.webm`);
      await waitFor(`${kind}: the head of /live.webm`, () => stream.current.status !== 0, 10_000).finally(() => stream.stop());
      expect(stream.current.status, `${kind} /live.webm`).to.equal(200);
      for (const path of ['/healthz', '/metrics', '/api/stats', '/nothing-here']) {
        const answer = await get(`${base}${path}`);
        expect(answer.headers['cache-control'], `${kind} ${path}`).to.equal('no-store');
      }
      const page = await get(`${base}/`);
      expect(page.status).to.equal(200);
      expect(page.headers['cache-control'], `${kind} /`).to.equal('no-cache');
      const plain = await get(`${base}/live`);
      expect(plain.status, `${kind}: GET /live without Upgrade`).to.equal(426);
      expect(plain.headers['cache-control']).to.equal('no-store');
      expect(plain.text).to.match(/WebSocket/).and.to.match(/Upgrade/);
      // Twice: a cache that kept the first answer would serve the second.
      for (let i = 0; i < 2; i++) {
        const health = await get(`${base}/healthz`);
        expect(health.status).to.equal(200);
        if (kind === 'varnish') expect(health.headers.age, 'Varnish: /healthz from the cache').to.equal('0');
      }
    }
    // Straight from the relay: nginx reads X-Accel-Buffering (and does not pass it on).
    const head = await fetch(`${relay!.url}/live.webm`, { method: 'HEAD' });
    expect(head.headers.get('x-accel-buffering')).to.equal('no');
    expect(head.headers.get('cache-control')).to.equal('no-store');
  });

  it(`/live.webm (HTTP, HTTPS) and /live (WebSocket) through each proxy: first media and lag within ${ALLOWED_MS} ms of a direct viewer, decodable`, async () => {
    const results = await measure({ http: relay!.url, ws: relay!.url.replace('http', 'ws') }, routesThrough(proxies!), 2, 4);
    await checkMeasured(results);
  });

  it('the WebSocket player protocol through each proxy: stream description, init segment, then media', async () => {
    for (const kind of PROXY_KINDS) {
      const viewer = new WsViewer(`${proxies![kind].url.replace('http', 'ws')}/live`);
      await viewer.opened;
      await sleep(1500);
      viewer.close();
      const [first, second] = viewer.messages;
      expect(JSON.parse(first.text ?? '{}'), `${kind}: first message`).to.include({ type: 'stream' });
      expect(second.binary?.subarray(0, 4).toString('hex'), `${kind}: the init segment's EBML header`).to.equal('1a45dfa3');
      expect(viewer.binaryBytes, `${kind}: media`).to.be.greaterThan(20_000);
      const media = Buffer.concat(viewer.messages.filter((m) => m.binary).map((m) => m.binary!));
      expect(await decodeErrors(trimToCompleteBlocks(media)), `${kind}: decoding`).to.deep.equal([]);
    }
  });

  describe('an audio-only stream (ffmpeg Opus producer)', () => {
    let audioRelay: RunningRelay | null = null;
    let producer: ChildProcess | null = null;
    let audioProxies: Record<ProxyKind, RunningProxy> | null = null;
    /** HAProxy with the repository's config less `option http-no-delay`. */
    let nagle: RunningProxy | null = null;
    /** nginx with buffering left on: the config's line removed and the relay's X-Accel-Buffering ignored. */
    let buffering: RunningProxy | null = null;

    before(async () => {
      const started = await startTcpRelay();
      audioRelay = started.relay;
      // Opus in 20 ms packets, each written out at once: the case where buffering in a proxy shows most.
      producer = ffmpegAudioOnly(`tcp://127.0.0.1:${started.ingestPort}`);
      await waitLive(audioRelay, 15_000);
      audioProxies = await startProxies(audioRelay.port);
      nagle = await startHaproxy([audioRelay.port], {
        editConfig: (cfg) => {
          const edited = cfg.replace(/^\s*option http-no-delay\s*$/m, '');
          if (edited === cfg) throw new Error('haproxy.cfg has no "option http-no-delay" line');
          return edited;
        },
      });
      buffering = await startNginx([audioRelay.port], {
        editConfig: (site) => {
          const edited = site.replace(/^\s*proxy_buffering off;$/gm, '').replace('proxy_cache off;', 'proxy_cache off;\n        proxy_ignore_headers X-Accel-Buffering;');
          if (edited === site) throw new Error('the nginx site has no "proxy_buffering off" line');
          return edited;
        },
      });
    });

    after(async () => {
      producer?.kill('SIGKILL');
      await stopProxies([...Object.values(audioProxies ?? {}), nagle, buffering]);
      await shutdown(audioRelay);
    });

    it(`first media and lag through each proxy within ${ALLOWED_MS} ms of a direct viewer, decodable; HAProxy without http-no-delay and nginx with buffering are not`, async () => {
      const routes = routesThrough(audioProxies!).filter((r) => !r.label.endsWith('https'));
      const control = 'haproxy, Nagle';
      routes.push({ label: control, url: `${nagle!.url}/live.webm` });
      const buffered = 'nginx, buffered';
      routes.push({ label: buffered, url: `${buffering!.url}/live.webm` });
      const results = await measure({ http: audioRelay!.url, ws: audioRelay!.url.replace('http', 'ws') }, routes, 2, 4);
      const withoutLine = results.find((r) => r.label === control)!;
      const withBuffering = results.find((r) => r.label === buffered)!;
      await checkMeasured(results.filter((r) => r !== withoutLine && r !== withBuffering));
      console.log(`      ${buffered.padEnd(14)} (proxy_buffering on, X-Accel-Buffering ignored): added lag median ${withBuffering.lag.medianMs} ms, p95 ${withBuffering.lag.p95Ms} ms (rounds ${withBuffering.rounds})`);
      console.log(`      ${control.padEnd(14)} (haproxy.cfg without "option http-no-delay"): added lag median ${withoutLine.lag.medianMs} ms, p95 ${withoutLine.lag.p95Ms} ms`);
      // Small writes wait for the previous one's ACK: the line in haproxy.cfg is what removes this.
      expect(withoutLine.lag.medianMs, 'HAProxy without http-no-delay').to.be.greaterThan(100);
      // nginx's buffers hold some blocks back until they fill or the upstream pauses: the tail, not the median, shows it.
      expect(withBuffering.lag.p95Ms, 'nginx with buffering on, 95th percentile').to.be.greaterThan(300);
    });

    it('with the relay gone, no proxy answers /healthz with 200 (no cache kept it)', async () => {
      for (const kind of PROXY_KINDS) expect((await get(`${audioProxies![kind].url}/healthz`)).status, `${kind}, relay up`).to.equal(200);
      producer?.kill('SIGKILL');
      await shutdown(audioRelay);
      for (const kind of PROXY_KINDS) {
        const answer = await get(`${audioProxies![kind].url}/healthz`);
        console.log(`      ${kind}: /healthz with the relay gone: ${answer.status}`);
        expect(answer.status, kind).to.be.within(500, 599);
      }
    });
  });
});

/** A live Opus-only WebM producer: 20 ms packets, each flushed to the relay as it is encoded. */
function ffmpegAudioOnly(output: string): ChildProcess {
  return spawn('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-nostdin',
    '-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:a', 'libopus', '-b:a', '64k', '-frame_duration', '20',
    '-flush_packets', '1', '-cluster_time_limit', '1000',
    '-f', 'webm', '-live', '1', output,
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
}
