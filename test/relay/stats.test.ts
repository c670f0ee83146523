import { expect } from 'chai';
import { getJson, waitFor, type RunningRelay } from '../helpers/relay.js';
import { gstProducer, HttpViewer, killTracked, startTcpRelay } from '../helpers/faults.js';

interface Stats {
  viewers: number;
  connections: number;
  viewersByTransport: { http: number; ws: number };
}

describe('viewer counting', function () {
  this.timeout(60_000);
  let relay: RunningRelay | null = null;
  const viewers: HttpViewer[] = [];

  after(async () => {
    for (const v of viewers) v.close();
    await relay?.stop('SIGKILL');
    await killTracked();
  });

  it('counts a connection as a viewer only once it has taken media, not while it waits for a stream', async () => {
    const started = await startTcpRelay();
    relay = started.relay;
    for (let i = 0; i < 3; i++) viewers.push(new HttpViewer(`${relay.url}/live.webm`));
    await waitFor('3 connections', async () => (await getJson<Stats>(`${relay!.url}/api/stats`)).connections === 3);
    const waiting = await getJson<Stats>(`${relay.url}/api/stats`);
    expect(waiting.viewers, 'viewers before any stream').to.equal(0);

    gstProducer(started.ingestPort);
    await waitFor('media at every viewer', () => viewers.every((v) => v.bytes > 2000), 20_000);
    await waitFor('3 viewers counted', async () => (await getJson<Stats>(`${relay!.url}/api/stats`)).viewers === 3);
    const watching = await getJson<Stats>(`${relay.url}/api/stats`);
    expect(watching).to.deep.include({ viewers: 3, connections: 3 });
    expect(watching.viewersByTransport).to.deep.equal({ http: 3, ws: 0 });
    const metrics = await (await fetch(`${relay.url}/metrics`)).text();
    expect(metrics).to.match(/^webm_relay_connections\{stream="live"\} 3$/m);
  });
});
