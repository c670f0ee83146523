/**
 * A 40 s producer gap with --producer-grace 90: every viewer, direct and through every
 * proxy, over HTTP and WebSocket, is still connected when the next producer comes, and
 * gets its media. What holds them: the relay's keep-alive bytes, one a second, which
 * reach every viewer through every proxy (HAProxy's `timeout server 30s` cut its HTTP
 * viewer at 30 s before the relay sent any).
 *
 * In the same minute, Varnish's `send_timeout` (the longest it spends sending one
 * response) set to 4 s: a viewer through deploy/'s VCL keeps watching, one through the
 * same VCL without its `sess.send_timeout` line is cut at 4 s, as every viewer is at
 * 600 s with Varnish's default.
 */
import { expect } from 'chai';
import { gstProducer, startTcpRelay, stopProcess, type Producer } from '../helpers/faults.js';
import { trimToCompleteBlocks, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { decodeErrors, mapLimit, shutdown, sleep } from '../helpers/viewers.js';
import { PROXY_KINDS, cleanUpProxies, startProxy, startVarnish, stopProxies, TimedViewer, type RunningProxy } from './harness.js';

const GAP_MS = 40_000;
const VARNISH_SEND_TIMEOUT_S = 4;

describe('proxies: a 40 s producer gap keeps every viewer through every proxy (about 60 s)', function () {
  this.timeout(150_000);
  let relay: RunningRelay | null = null;
  let producer: Producer | null = null;
  const proxies: RunningProxy[] = [];

  after(async () => {
    if (producer) await stopProcess(producer.process, 'SIGKILL');
    await stopProxies(proxies);
    await shutdown(relay);
    await cleanUpProxies();
  });

  it('HTTP and WebSocket viewers, direct and through nginx, HAProxy and Varnish, all stay connected and play on; Varnish send_timeout proven', async () => {
    const started = await startTcpRelay(['--producer-grace', '90']);
    relay = started.relay;
    producer = gstProducer(started.ingestPort);
    await waitLive(relay, 15_000);
    for (const kind of PROXY_KINDS) proxies.push(await startProxy(kind, [relay.port]));
    const params = { send_timeout: String(VARNISH_SEND_TIMEOUT_S) };
    const withLine = await startVarnish(relay.port, { varnishParams: params });
    const withoutLine = await startVarnish(relay.port, {
      varnishParams: params,
      editConfig: (vcl) => {
        const edited = vcl.replace(/^\s*set sess\.send_timeout = .*$/m, '');
        if (edited === vcl) throw new Error('the VCL has no sess.send_timeout line');
        return edited;
      },
    });
    proxies.push(withLine, withoutLine);

    const viewers = new Map<string, TimedViewer>();
    viewers.set('direct http', new TimedViewer(`${relay.url}/live.webm`));
    viewers.set('direct ws', new TimedViewer(`${relay.url.replace('http', 'ws')}/live`));
    for (const p of proxies.slice(0, 3)) {
      viewers.set(`${p.kind} http`, new TimedViewer(`${p.url}/live.webm`));
      viewers.set(`${p.kind} ws`, new TimedViewer(`${p.url.replace('http', 'ws')}/live`));
    }
    viewers.set(`varnish send_timeout=${VARNISH_SEND_TIMEOUT_S}`, new TimedViewer(`${withLine.url}/live.webm`));
    const cut = new TimedViewer(`${withoutLine.url}/live.webm`);
    const cutStartedAt = Date.now();
    try {
      await waitFor('media at every viewer', () => [...viewers.values(), cut].every((v) => v.lastMediaAt > 0), 10_000);
      await sleep(1000);

      await stopProcess(producer.process, 'SIGKILL');
      const gapStartedAt = Date.now();
      await waitFor('the relay to see the producer gone', async () => (await fetch(`${relay!.url}/healthz`)).status === 503, 5000);
      await sleep(GAP_MS - (Date.now() - gapStartedAt));
      const gapEndedAt = Date.now();
      const closedDuringGap = [...viewers].filter(([, v]) => v.closedAt).map(([label, v]) => `${label} after ${v.closedAt - gapStartedAt} ms`);

      producer = gstProducer(started.ingestPort);
      const resumedAt = Date.now();
      await waitFor('media after the gap at every viewer still connected', () => [...viewers.values()].every((v) => v.closedAt || v.lastMediaAt > resumedAt), 15_000).catch(() => {});
      const late = [...viewers].filter(([, v]) => v.lastMediaAt <= resumedAt).map(([label]) => label);
      await sleep(1000);
      for (const [label, v] of viewers) {
        console.log(`      ${label.padEnd(24)} connections ${v.connections.length}, keep-alives in the gap ${v.trafficBetween(gapStartedAt + 1500, gapEndedAt)}, longest gap ${v.longestGap.ms} ms, ${v.closedAt ? `closed ${v.closedAt - gapStartedAt} ms into the gap` : 'still open'}`);
      }
      console.log(`      varnish without the sess.send_timeout line: closed ${cut.closedAt ? `${cut.closedAt - cutStartedAt} ms after it started` : 'never'}`);
      expect(closedDuringGap, 'viewers cut during the gap').to.deep.equal([]);
      expect(late, 'viewers without media after the gap').to.deep.equal([]);
      for (const [label, v] of viewers) {
        expect(v.connections.length, `${label}: connections`).to.equal(1);
        // One a second (the relay's idle time), as they came through the proxy.
        expect(v.trafficBetween(gapStartedAt + 1500, gapEndedAt), `${label}: keep-alives during the gap`).to.be.at.least(20);
        expect(v.longestGap.ms, `${label}: the gap it saw`).to.be.within(GAP_MS - 1000, GAP_MS + 15_000);
      }
      expect(cut.closedAt, 'Varnish without sess.send_timeout cuts the viewer').to.be.greaterThan(0);
      expect(cut.closedAt - cutStartedAt).to.be.within(VARNISH_SEND_TIMEOUT_S * 1000 - 500, VARNISH_SEND_TIMEOUT_S * 1000 + 3000);
    } finally {
      for (const v of [...viewers.values(), cut]) v.stop();
    }
    // Keep-alive bytes and the gap leave a stream every reader takes.
    const labels = [...viewers.keys()];
    const errors = await mapLimit(labels, 2, (label) => decodeErrors(trimToCompleteBlocks(viewers.get(label)!.body())));
    labels.forEach((label, i) => expect(errors[i], `${label}: ffmpeg -v error`).to.deep.equal([]));
  });
});
