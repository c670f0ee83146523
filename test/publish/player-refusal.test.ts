/**
 * The player (Chromium) against a refusal: 4401/4403 on its WebSocket, 401/403 on the
 * segments' index or a segment. It says why and does not try again; the relay sees one
 * attempt, not a reconnect loop.
 */
import { expect } from 'chai';
import net from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { signedQuery } from '../../src/server/auth.js';
import { launchBrowser, sleep } from '../helpers/browser.js';
import { getJson, waitFor } from '../helpers/relay.js';
import type { StreamSummary } from '../../src/protocol.js';
import { PROTECTED_STREAMS, READ_TOKEN, SIGN_KEY, startWithConfig } from './helpers.js';

interface PlayerView {
  state: string;
  message: string;
  connections: number;
  transport: string;
}

const playerView = (page: Page): Promise<PlayerView> =>
  page.evaluate(() => {
    const player = (window as unknown as { player: { state: string; message: string; transport: { connections: number; kind?: string } } }).player;
    return { state: player.state, message: player.message, connections: player.transport.connections, transport: player.transport.kind ?? 'websocket' };
  });

/** A TCP proxy in front of the relay whose connections the test can cut (a network that drops). */
async function cuttableProxy(port: number): Promise<{ url: string; cut: () => number; close: () => void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    cut: () => {
      const count = sockets.size;
      for (const socket of sockets) socket.destroy();
      return count;
    },
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** Lines of the relay's log that record a refusal of `what` (e.g. "club: websocket", "members: GET /members/index.json"). */
const refusals = (log: string, what: string) => log.split('\n').filter((line) => line.includes(` ${what}`) && line.includes(' from 127.0.0.1: refused'));

describe('publish: the player stops at a refusal and says why (Chromium)', function () {
  this.timeout(120_000);
  let relay: Awaited<ReturnType<typeof startWithConfig>>;
  let browser: Browser;
  let context: BrowserContext;

  before(async () => {
    relay = await startWithConfig(PROTECTED_STREAMS);
    await waitFor('the streams live', async () => (await getJson<{ streams: StreamSummary[] }>(`${relay.url}/api/streams`)).streams.every((s) => s.live), 20_000);
    browser = await launchBrowser();
    context = await browser.newContext();
  });
  after(async () => {
    await browser?.close();
    await relay?.stop();
  });

  /** A page of `members` let in by the cookie its player page sets (the address has no token), as a bookmark would open it. */
  async function memberPage(base: string, query: string): Promise<Page> {
    const first = await context.newPage();
    await first.goto(`${base}/members/?token=${READ_TOKEN}`);
    await first.close();
    const page = await context.newPage();
    await page.goto(`${base}/members/${query}`);
    await page.waitForFunction(() => (window as unknown as { player: { state: string } }).player.state === 'playing', null, { timeout: 20_000 });
    return page;
  }

  async function expectStopped(page: Page, what: string, message: RegExp): Promise<PlayerView> {
    await page.waitForFunction(() => (window as unknown as { player: { state: string } }).player.state === 'denied', null, { timeout: 15_000 });
    const at = await playerView(page);
    const relayCount = refusals(relay.log(), what).length;
    // A reconnect loop would have tried again within 0.25 to 5 s.
    await sleep(6000);
    const later = await playerView(page);
    expect(later, 'no attempt after the refusal').to.deep.equal(at);
    expect(refusals(relay.log(), what).length, `the relay saw no further attempt: ${refusals(relay.log(), what).join('\n')}`).to.equal(relayCount);
    expect(later.message, JSON.stringify(later)).to.match(message);
    expect(await page.textContent('#notice')).to.equal(later.message);
    expect(await page.textContent('#status')).to.equal('no access');
    return later;
  }

  it('WebSocket 4401: a viewer whose cookie is gone loses its connection, tries once, and is told the stream needs a token', async () => {
    const proxy = await cuttableProxy(relay.port);
    try {
      const page = await memberPage(proxy.url, '');
      const before = (await playerView(page)).connections;
      const wsBefore = refusals(relay.log(), 'members: websocket').length;
      await context.clearCookies();
      expect(proxy.cut(), 'connections cut').to.be.greaterThan(0);
      const view = await expectStopped(page, 'members: websocket', /^This stream needs a token or a signed link: open the link you were given\.$/);
      expect(view.connections - before, 'WebSocket attempts after the cut').to.equal(1);
      expect(refusals(relay.log(), 'members: websocket').length - wsBefore, 'refused WebSockets the relay saw').to.equal(1);
      await page.close();
    } finally {
      proxy.close();
    }
  });

  it('segments 401: a segments viewer whose cookie is gone is stopped at its next request with the same message', async () => {
    const page = await memberPage(relay.url, '?transport=segments');
    const before = refusals(relay.log(), 'members: GET /members/').length;
    await context.clearCookies();
    const view = await expectStopped(page, 'members: GET /members/', /^This stream needs a token or a signed link/);
    expect(view.transport).to.equal('segments');
    const refused = refusals(relay.log(), 'members: GET /members/').slice(before);
    expect(refused.length, refused.join('\n')).to.equal(1);
    expect(refused[0]).to.match(/GET \/members\/[^/ ]+\/\d+\.webm from 127\.0\.0\.1: refused \(missing token\)/);
    await page.close();
  });

  it('WebSocket 4403: a viewer whose link expired while it watched loses its connection, tries once, and is told the link has expired', async () => {
    const proxy = await cuttableProxy(relay.port);
    try {
      const page = await context.newPage();
      const link = signedQuery('club', 6, SIGN_KEY);
      const expires = Number(new URLSearchParams(link).get('exp')) * 1000;
      await page.goto(`${proxy.url}/club/?${link}`);
      await page.waitForFunction(() => (window as unknown as { player: { state: string } }).player.state === 'playing', null, { timeout: 20_000 });
      // Watching goes on past the expiry: a viewer is not cut off by its link.
      await sleep(Math.max(0, expires - Date.now()) + 1500);
      expect((await playerView(page)).state).to.equal('playing');
      const before = (await playerView(page)).connections;
      const wsBefore = refusals(relay.log(), 'club: websocket').length;
      expect(proxy.cut(), 'connections cut').to.be.greaterThan(0);
      const view = await expectStopped(page, 'club: websocket', /^The relay refused this link \(the link has expired\)\. Ask whoever gave it to you for a new one\.$/);
      expect(view.connections - before, 'WebSocket attempts after the cut').to.equal(1);
      expect(refusals(relay.log(), 'club: websocket').length - wsBefore, 'refused WebSockets the relay saw').to.equal(1);
      await page.close();
    } finally {
      proxy.close();
    }
  });

  it('segments 403: a segments viewer whose link expires is stopped at its next request with "the link has expired"', async () => {
    const page = await context.newPage();
    const link = signedQuery('club', 5, SIGN_KEY);
    await page.goto(`${relay.url}/club/?${link}&transport=segments`);
    await page.waitForFunction(() => (window as unknown as { player: { state: string } }).player.state === 'playing', null, { timeout: 20_000 });
    const before = refusals(relay.log(), 'club: GET /club/');
    const view = await expectStopped(page, 'club: GET /club/', /^The relay refused this link \(the link has expired\)/);
    expect(view.transport).to.equal('segments');
    const refused = refusals(relay.log(), 'club: GET /club/').slice(before.length);
    expect(refused.length, refused.join('\n')).to.equal(1);
    expect(refused[0]).to.match(/GET \/club\/[^/ ]+\/\d+\.webm from 127\.0\.0\.1: refused \(expired signature\)/);
    await page.close();
  });

  it('the player page\'s file is not served around its gate: /index.html goes to the list, /publish.html is not there', async () => {
    const index = await fetch(`${relay.url}/index.html`, { redirect: 'manual' });
    expect([index.status, index.headers.get('location')]).to.deep.equal([302, './']);
    expect((await fetch(`${relay.url}/publish.html`)).status).to.equal(404);
  });
});
