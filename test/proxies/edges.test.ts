/**
 * A tier of edge relays pulling an origin (--ingest http://ORIGIN/live.webm): a hung
 * origin, an origin down for 8 s, and two edges behind HAProxy (deploy/haproxy) with one
 * of them shut down while 40 viewers watch.
 */
import { expect } from 'chai';
import { alive, gstChildren } from '../helpers/faults.js';
import { freePort, startRelay, trimToCompleteBlocks, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { decodeErrors, mapLimit, shutdown, sleep } from '../helpers/viewers.js';
import { cleanUpProxies, startHaproxy, stopProxies, TimedViewer, type RunningProxy } from './harness.js';

const SMALL = ['--width', '320', '--height', '240', '--video-bitrate', '400'];

async function healthStatus(url: string): Promise<number | 'refused'> {
  try {
    return (await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) })).status;
  } catch {
    return 'refused';
  }
}

describe('proxies: edge relays pulling an origin', function () {
  this.timeout(120_000);
  const relays: RunningRelay[] = [];
  const proxies: RunningProxy[] = [];
  const viewers: TimedViewer[] = [];

  afterEach(async () => {
    for (const v of viewers.splice(0)) v.stop();
    await stopProxies(proxies.splice(0));
    // Stopped processes must be running again before they can handle SIGTERM.
    for (const r of relays) if (r.process.pid && alive(r.process.pid)) process.kill(r.process.pid, 'SIGCONT');
    await Promise.all(relays.splice(0).map((r) => shutdown(r)));
    await cleanUpProxies();
  });

  it('origin hung (SIGSTOP): the edge\'s /healthz fails within 5 s and says why; its viewers get media within 3 s of SIGCONT', async () => {
    const origin = await startRelay(SMALL);
    relays.push(origin);
    await waitLive(origin, 20_000);
    const edge = await startRelay(['--ingest', `${origin.url}/live.webm`]);
    relays.push(edge);
    await waitLive(edge, 15_000);
    const http = new TimedViewer(`${edge.url}/live.webm`);
    const ws = new TimedViewer(`${edge.url.replace('http', 'ws')}/live`);
    viewers.push(http, ws);
    await waitFor('media at the edge viewers', () => http.lastMediaAt > 0 && ws.lastMediaAt > 0, 10_000);
    await sleep(1000);

    process.kill(origin.process.pid!, 'SIGSTOP');
    const stoppedAt = Date.now();
    await waitFor('the edge\'s /healthz to fail', async () => (await healthStatus(edge.url)) === 503, 5000);
    const unhealthyAfter = Date.now() - stoppedAt;
    const health = await fetch(`${edge.url}/healthz`);
    const healthText = await health.text();
    await sleep(Math.max(0, 8000 - (Date.now() - stoppedAt)));

    // A stopped process can only have been killed: say by what, with what it last logged.
    const { exitCode, signalCode } = origin.process;
    expect(alive(origin.process.pid!), `the origin is gone while stopped (exit ${exitCode}, signal ${signalCode}); its log ends:\n${origin.log().slice(-3000)}`).to.equal(true);
    process.kill(origin.process.pid!, 'SIGCONT');
    const continuedAt = Date.now();
    await waitFor('media at both edge viewers after SIGCONT', () => http.lastMediaAt > continuedAt && ws.lastMediaAt > continuedAt, 3000);
    const mediaAfter = Math.max(http.lastMediaAt, ws.lastMediaAt) - continuedAt;
    await waitLive(edge, 3000);
    await sleep(1500);
    console.log(`      /healthz 503 ${unhealthyAfter} ms after SIGSTOP ("${healthText.trim()}"); media ${mediaAfter} ms after SIGCONT; viewers' longest gap ${http.longestGap.ms} / ${ws.longestGap.ms} ms`);
    expect(unhealthyAfter).to.be.at.most(5000);
    expect(healthText).to.match(/upstream .*(no data|hung)/);
    expect(edge.log()).to.match(/upstream .*: no data for 3000 ms \(upstream hung\); reconnecting/);
    expect(http.connections.length, 'the HTTP viewer stayed').to.equal(1);
    expect(ws.connections.length, 'the WebSocket viewer stayed').to.equal(1);
    for (const [label, v] of [['http', http], ['ws', ws]] as const) {
      expect(await decodeErrors(trimToCompleteBlocks(v.body())), `${label}: ffmpeg -v error`).to.deep.equal([]);
    }
  });

  it('origin down 8 s: the edge\'s viewers wait at most the downtime plus 2 s', async () => {
    const port = await freePort();
    const originArgs = [...SMALL, '--port', String(port)];
    let origin = await startRelay(originArgs);
    relays.push(origin);
    await waitLive(origin, 20_000);
    const edge = await startRelay(['--ingest', `${origin.url}/live.webm`]);
    relays.push(edge);
    await waitLive(edge, 15_000);
    const viewer = new TimedViewer(`${edge.url}/live.webm`);
    viewers.push(viewer);
    await waitFor('media at the edge viewer', () => viewer.lastMediaAt > 0, 10_000);
    await sleep(1000);

    // A crash: the relay and its encoder gone at once.
    const encoders = gstChildren(origin.process.pid!);
    origin.process.kill('SIGKILL');
    for (const pid of encoders) process.kill(pid, 'SIGKILL');
    const downAt = Date.now();
    await origin.stop();
    await sleep(8000 - (Date.now() - downAt));
    origin = await startRelay(originArgs);
    relays.push(origin);
    await waitLive(origin, 20_000);
    const downtime = Date.now() - downAt;
    await waitFor('media at the edge viewer again', () => viewer.lastMediaAt > downAt + downtime, 10_000);
    await sleep(1000);
    const retries = (edge.log().match(/reconnecting in \d+ ms/g) ?? []).map((l) => Number(/(\d+)/.exec(l)![1]));
    console.log(`      origin down ${downtime} ms (until its /healthz was 200 again); edge viewer's gap ${viewer.longestGap.ms} ms; edge retried after ${retries.join(', ')} ms`);
    expect(viewer.connections.length, 'the viewer stayed').to.equal(1);
    expect(viewer.longestGap.ms).to.be.at.most(downtime + 2000);
    expect(Math.max(...retries), 'backoff cap').to.be.at.most(1000);
    expect(await decodeErrors(trimToCompleteBlocks(viewer.body())), 'ffmpeg -v error').to.deep.equal([]);
  });

  it('SIGTERM with --drain 5 and no viewer: /healthz refused at once, exit at once', async () => {
    const relay = await startRelay([...SMALL, '--drain', '5']);
    relays.push(relay);
    await waitLive(relay, 20_000);
    const termAt = Date.now();
    relay.process.kill('SIGTERM');
    await sleep(100);
    const health = await healthStatus(relay.url);
    const code = await relay.stop();
    const exitedAfter = Date.now() - termAt;
    console.log(`      /healthz 100 ms after SIGTERM: ${health}; exit ${code} after ${exitedAfter} ms`);
    expect(health).to.not.equal(200);
    expect(code).to.equal(0);
    expect(exitedAfter, 'nothing to drain').to.be.below(2000);
    expect(relay.log()).to.match(/SIGTERM: shutting down/);
  });

  it('two edges behind HAProxy, 40 viewers reconnecting like the player: SIGTERM one edge, all stream again through the other within 2 s, no 503', async () => {
    const origin = await startRelay(SMALL);
    relays.push(origin);
    await waitLive(origin, 20_000);
    const edges = await Promise.all(
      [0, 1].map(async () => {
        const edge = await startRelay(['--ingest', `${origin.url}/live.webm`, '--drain', '3']);
        relays.push(edge);
        return edge;
      }),
    );
    await Promise.all(edges.map((e) => waitLive(e, 15_000)));
    const haproxy = await startHaproxy(edges.map((e) => e.port));
    proxies.push(haproxy);
    // Health checks every second, up after two: both edges in service.
    await sleep(2500);

    for (let i = 0; i < 40; i++) {
      const url = i % 2 ? `${haproxy.url.replace('http', 'ws')}/live` : `${haproxy.url}/live.webm`;
      viewers.push(new TimedViewer(url, { reconnect: true }));
    }
    await waitFor('media at all 40 viewers', () => viewers.every((v) => v.lastMediaAt > 0), 15_000);
    await sleep(1500);
    const perEdge = await Promise.all(edges.map(async (e) => ((await (await fetch(`${e.url}/api/stats`)).json()) as { connections: number }).connections));

    const [leaving, staying] = edges;
    const termAt = Date.now();
    leaving.process.kill('SIGTERM');
    await sleep(100);
    const healthWhileDraining = await healthStatus(leaving.url);
    const exit = await leaving.stop();
    const exitedAfter = Date.now() - termAt;
    await sleep(3000);

    const moved = viewers.filter((v) => v.connections.length > 1);
    const resumeMs = moved.map((v) => {
      const [before, after] = v.connections.slice(-2);
      return after.firstMediaAt ? after.firstMediaAt - before.closedAt : Infinity;
    });
    // While the edge drained, its viewers kept watching: media until just before it closed them.
    const watchedDuringDrain = moved.map((v) => v.connections[v.connections.length - 2].lastMediaAt - termAt);
    const stayed = viewers.filter((v) => v.connections.length === 1);
    const refusals = viewers.flatMap((v) => v.refusals);
    const haproxy503 = haproxy.output().split('\n').filter((line) => / 503 /.test(line));
    const staysWith = ((await (await fetch(`${staying.url}/api/stats`)).json()) as { connections: number }).connections;
    console.log(`      before: ${perEdge.join(' + ')} viewers on the two edges; /healthz of the draining edge: ${healthWhileDraining}; it exited (code ${exit}) ${exitedAfter} ms after SIGTERM`);
    console.log(`      the draining edge's viewers had media until ${Math.min(...watchedDuringDrain)}-${Math.max(...watchedDuringDrain)} ms after SIGTERM`);
    console.log(`      ${moved.length} viewers moved, streaming again after ${Math.min(...resumeMs)}-${Math.max(...resumeMs)} ms (median ${resumeMs.sort((a, b) => a - b)[Math.floor(resumeMs.length / 2)]} ms); ${stayed.length} stayed; the other edge now has ${staysWith}; 503s: ${refusals.length} seen by viewers, ${haproxy503.length} in HAProxy's log`);
    expect(healthWhileDraining, '/healthz at once after SIGTERM').to.not.equal(200);
    expect(exit).to.equal(0);
    expect(exitedAfter, 'drain of 3 s, then gone').to.be.within(2900, 8000);
    expect(moved.length, 'viewers that were on the edge shut down').to.be.at.least(10);
    expect(moved.length + stayed.length).to.equal(40);
    // (An encoder starved of CPU pauses for a few hundred ms at times: not the drain's doing.)
    expect(Math.min(...watchedDuringDrain), 'media during the drain').to.be.at.least(2000);
    expect(Math.max(...resumeMs), 'slowest viewer streaming again').to.be.at.most(2000);
    expect(refusals, '503s at viewers').to.deep.equal([]);
    expect(haproxy503, "503s in HAProxy's log").to.deep.equal([]);
    expect(staysWith).to.equal(40);
    const sample = moved.slice(0, 4);
    const errors = await mapLimit(sample, 2, (v) => decodeErrors(trimToCompleteBlocks(v.body(v.connections.length - 1))));
    errors.forEach((lines, i) => expect(lines, `moved viewer ${i}: ffmpeg -v error`).to.deep.equal([]));
  });
});
