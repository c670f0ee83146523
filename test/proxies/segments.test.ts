/**
 * Segments and their index through nginx, HAProxy and Varnish with the repository's
 * configurations: the same bytes as from the relay directly, and the relay's caching
 * headers passed on (Varnish's own tier, with request coalescing, is test/segments).
 */
import { expect } from 'chai';
import { startRelay, waitLive, type RunningRelay } from '../helpers/relay.js';
import { readerAgent, readSegments } from '../segments/readers.js';
import { cleanUpProxies, get, PROXY_KINDS, startProxy, stopProxies, type RunningProxy } from './harness.js';

const SMALL = ['--width', '320', '--height', '240', '--video-bitrate', '400'];

describe('proxies: segments and index.json through nginx, HAProxy and Varnish', function () {
  this.timeout(180_000);
  let relay: RunningRelay | null = null;
  const proxies: RunningProxy[] = [];

  after(async () => {
    await stopProxies(proxies);
    await cleanUpProxies();
    await relay?.stop();
  });

  it('every proxy answers index.json with the relay\'s headers and serves init and segments byte for byte as the relay does', async () => {
    relay = await startRelay(SMALL);
    for (const kind of PROXY_KINDS) proxies.push(await startProxy(kind, [relay.port]));
    await waitLive(relay, 20_000);

    for (const proxy of proxies) {
      const index = await get(`${proxy.url}/live/index.json`);
      expect(index.status, `${proxy.kind}: index.json`).to.equal(200);
      expect(index.headers['cache-control'], `${proxy.kind}: index.json Cache-Control`).to.equal('public, max-age=0, s-maxage=1');
      expect(JSON.parse(index.text)).to.have.property('epoch').that.is.a('string');
      const junk = await get(`${proxy.url}/live/${JSON.parse(index.text).epoch}/not-a-number.webm`);
      expect(junk.status, `${proxy.kind}: a junk segment URL`).to.equal(404);
    }

    // A direct reader and one through each proxy read the same three segments at once.
    const agent = readerAgent();
    const direct = readSegments(`${relay.url}/live/`, 3, agent);
    const through = proxies.map((p) => readSegments(`${p.url}/live/`, 3, agent));
    const [reference, ...results] = await Promise.all([direct, ...through]);
    results.forEach((result, i) => {
      const kind = proxies[i].kind;
      expect(result.epoch, `${kind}: epoch`).to.equal(reference.epoch);
      expect(result.init.equals(reference.init), `${kind}: init.webm`).to.equal(true);
      let compared = 0;
      for (const [seq, fetched] of result.segments) {
        const mine = reference.segments.get(seq);
        if (!mine) continue;
        expect(fetched.body.equals(mine.body), `${kind}: segment ${seq}`).to.equal(true);
        expect(fetched.headers['cache-control'], `${kind}: segment ${seq} Cache-Control`).to.equal('public, max-age=31536000, immutable');
        compared++;
      }
      console.log(`      ${kind}: ${compared} segments compared with the direct reader's, identical`);
      expect(compared, `${kind}: segments read by both`).to.be.at.least(2);
    });
  });
});
