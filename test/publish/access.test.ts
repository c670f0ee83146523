import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import { WebSocket } from 'ws';
import { signedQuery } from '../../src/server/auth.js';
import type { StreamSummary } from '../../src/protocol.js';
import { CLI, getJson, sleep, waitFor } from '../helpers/relay.js';
import { PROTECTED_STREAMS, READ_TOKEN, SIGN_KEY, startWithConfig } from './helpers.js';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  ms: number;
}

/** The status of a GET (the body is not read: the stream never ends). `localAddress` stands for another client. */
function get(url: string, options: { localAddress?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const request = http.get(url, { localAddress: options.localAddress, headers: options.headers }, (response) => {
      resolve({ status: response.statusCode ?? 0, headers: response.headers, ms: Date.now() - started });
      request.destroy();
    });
    request.on('error', (error) => {
      if (!request.destroyed) reject(error);
    });
  });
}

interface SocketOutcome {
  /** The first text message's type, when the relay let it in. */
  firstType: string | null;
  closeCode: number | null;
  handshakeStatus: number | null;
}

/** Opens a viewer WebSocket and reports what happened within 5 s. */
function openViewer(url: string, options: { localAddress?: string; origin?: string; headers?: Record<string, string> } = {}): Promise<SocketOutcome> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { localAddress: options.localAddress, origin: options.origin, headers: options.headers });
    const outcome: SocketOutcome = { firstType: null, closeCode: null, handshakeStatus: null };
    const done = () => {
      clearTimeout(timer);
      ws.terminate();
      resolve(outcome);
    };
    const timer = setTimeout(done, 5000);
    ws.on('message', (data, isBinary) => {
      if (!isBinary && outcome.firstType === null) {
        outcome.firstType = (JSON.parse(data.toString()) as { type: string }).type;
        done();
      }
    });
    ws.on('unexpected-response', (_req, res) => {
      outcome.handshakeStatus = res.statusCode ?? 0;
      done();
    });
    ws.on('close', (code) => {
      outcome.closeCode = code;
      done();
    });
    ws.on('error', () => {});
  });
}

describe('publish: viewer access per stream (read: token, read: signed) on every way in', function () {
  this.timeout(90_000);
  let relay: Awaited<ReturnType<typeof startWithConfig>>;
  let ws: string;
  /** Each wrong attempt from an address of its own, so that none of them is slowed down by the others. */
  let nextAddress = 10;
  const stranger = () => `127.0.0.${nextAddress++}`;

  before(async () => {
    relay = await startWithConfig(PROTECTED_STREAMS);
    ws = relay.url.replace('http:', 'ws:');
    await waitFor(
      'both streams live',
      async () => (await getJson<{ streams: StreamSummary[] }>(`${relay.url}/api/streams`)).streams.every((s) => s.live),
      20_000,
    );
  });
  after(async () => {
    await relay?.stop();
  });

  /** Every way into a stream, as a path (the WebSocket separately). */
  const paths = (name: string) => [`/${name}/`, `/${name}.webm`, `/${name}/snapshot.jpg`, `/${name}/index.json`, `/api/streams/${name}`];

  async function expectEverywhere(name: string, query: string, status: number, ws4xx: number | null, label: string, headers: Record<string, string> = {}) {
    const localAddress = status === 200 ? undefined : stranger();
    for (const path of paths(name)) {
      const answer = await get(`${relay.url}${path}${query}`, { localAddress, headers });
      expect(answer.status, `${label}: GET ${path}${query}`).to.equal(status);
    }
    const socket = await openViewer(`${ws}/${name}${query}`, { localAddress, headers });
    if (ws4xx === null) expect(socket.firstType, `${label}: WebSocket`).to.equal('stream');
    else expect(socket.closeCode, `${label}: WebSocket ${JSON.stringify(socket)}`).to.equal(ws4xx);
  }

  it('read: token: 401/4401 without it, 403/4403 with a wrong one, in with ?token= or the cookie the player page sets', async () => {
    await expectEverywhere('members', '', 401, 4401, 'no token');
    await expectEverywhere('members', '?token=wrong-token-0123456789', 403, 4403, 'wrong token');
    await expectEverywhere('members', `?token=${READ_TOKEN}`, 200, null, 'the token');

    const page = await get(`${relay.url}/members/?token=${READ_TOKEN}`);
    const cookie = String(page.headers['set-cookie']?.[0] ?? '');
    expect(cookie).to.match(/^webm-relay-members=[^;]+;.*HttpOnly/i);
    expect(cookie).to.match(/SameSite=Lax/i);
    await expectEverywhere('members', '', 200, null, 'the cookie', { Cookie: cookie.split(';')[0] });
    await expectEverywhere('members', '', 403, 4403, 'a wrong cookie', { Cookie: 'webm-relay-members=wrong-token-0123456789' });

    const jpeg = await fetch(`${relay.url}/members/snapshot.jpg?token=${READ_TOKEN}`);
    expect(jpeg.headers.get('content-type')).to.equal('image/jpeg');
    expect((await jpeg.arrayBuffer()).byteLength).to.be.greaterThan(1000);
  });

  it('read: signed: 401 without a signature, 403 for a wrong, tampered or expired one, in with a valid link', async () => {
    const valid = `?${signedQuery('club', 3600, SIGN_KEY)}`;
    const expired = `?${signedQuery('club', 60, SIGN_KEY, Date.now() - 3600_000)}`;
    const otherKey = `?${signedQuery('club', 3600, 'another-key-0123456789abcdef')}`;
    const otherStream = `?${signedQuery('members', 3600, SIGN_KEY)}`;
    const stretched = valid.replace(/exp=(\d+)/, (_m, exp: string) => `exp=${Number(exp) + 86400}`);
    await expectEverywhere('club', '', 401, 4401, 'no signature');
    await expectEverywhere('club', '?exp=9999999999', 401, 4401, 'no sig');
    await expectEverywhere('club', otherKey, 403, 4403, 'signed with another key');
    await expectEverywhere('club', otherStream, 403, 4403, 'signed for another stream');
    await expectEverywhere('club', stretched, 403, 4403, 'expiry moved');
    await expectEverywhere('club', expired, 403, 4403, 'expired');
    await expectEverywhere('club', valid, 200, null, 'valid');
  });

  it('the stream list shows protected streams without their picture to those without access', async () => {
    const anonymous = await getJson<{ streams: StreamSummary[] }>(`${relay.url}/api/streams`);
    for (const stream of anonymous.streams) {
      expect(stream.access, stream.name).to.equal(false);
      expect(stream.urls.snapshot, stream.name).to.equal(null);
      expect(stream.live, stream.name).to.equal(true);
    }
    expect(anonymous.streams.find((s) => s.name === 'members')!.read).to.equal('token');
    const withCookie = (await (await fetch(`${relay.url}/api/streams`, { headers: { Cookie: `webm-relay-members=${READ_TOKEN}` } })).json()) as { streams: StreamSummary[] };
    const members = withCookie.streams.find((s) => s.name === 'members')!;
    expect(members.access).to.equal(true);
    expect(members.urls.snapshot).to.equal('members/snapshot.jpg');
    expect(withCookie.streams.find((s) => s.name === 'club')!.urls.snapshot).to.equal(null);
  });

  it('webm-relay sign prints links that work until their expiry', async () => {
    const result = spawnSync(process.execPath, [CLI, 'sign', 'club', '--ttl', '3s', '--config', relay.configFile, '--base', relay.url], { encoding: 'utf8' });
    expect(result.status, result.stderr).to.equal(0);
    const [player, webm] = result.stdout.trim().split('\n');
    expect(player).to.match(new RegExp(`^${relay.url}/club/\\?exp=\\d+&sig=[\\w-]+$`));
    expect(webm).to.match(new RegExp(`^${relay.url}/club\\.webm\\?exp=\\d+&sig=[\\w-]+$`));
    expect((await get(player)).status).to.equal(200);
    expect((await get(webm)).status).to.equal(200);
    expect((await openViewer(webm.replace('http:', 'ws:').replace('.webm', ''))).firstType).to.equal('stream');
    const expiresMs = Number(/exp=(\d+)/.exec(player)![1]) * 1000;
    await sleep(Math.max(0, expiresMs - Date.now() + 200));
    expect((await get(player, { localAddress: stranger() })).status).to.equal(403);
    expect((await get(webm, { localAddress: stranger() })).status).to.equal(403);

    const bad = spawnSync(process.execPath, [CLI, 'sign', 'members', '--config', relay.configFile], { encoding: 'utf8' });
    expect(bad.status).to.equal(2);
    expect(bad.stderr).to.match(/stream "members" has no sign-key/);
  });

  it('counts refusals per stream in /metrics, logs them with the address, and slows down an address that keeps failing', async () => {
    const metrics = await (await fetch(`${relay.url}/metrics`)).text();
    const failures = (name: string) => Number(new RegExp(`webm_relay_access_failures_total\\{stream="${name}",kind="read"\\} (\\d+)`).exec(metrics)?.[1]);
    expect(failures('members')).to.be.greaterThan(10);
    expect(failures('club')).to.be.greaterThan(20);
    expect(relay.log()).to.match(/members: GET \/members\.webm from 127\.0\.0\.\d+: refused \(wrong token\)/);

    const times: number[] = [];
    for (let i = 0; i < 8; i++) {
      const answer = await get(`${relay.url}/members.webm?token=guess-${i}-0123456789abcdef`, { localAddress: '127.0.0.250' });
      expect(answer.status).to.equal(403);
      times.push(answer.ms);
    }
    // Five free, then 0.5 s, 1 s, 2 s before each attempt is checked (lower bounds only: a
    // loaded machine makes any answer slow, never one fast).
    expect(times[5], JSON.stringify(times)).to.be.at.least(450);
    expect(times[6], JSON.stringify(times)).to.be.at.least(950);
    expect(times[7], JSON.stringify(times)).to.be.at.least(1950);
    const log = relay.log();
    expect(log).to.match(/from 127\.0\.0\.250: refused \(wrong token\); its attempts now wait 500 ms/);
    expect(log).to.match(/from 127\.0\.0\.250: refused \(wrong token\); its attempts now wait 4000 ms/);
    // Another address is not slowed down by it.
    expect(log).to.not.match(/from 127\.0\.0\.1: refused \(wrong token\); its attempts now wait/);
    expect((await get(`${relay.url}/members.webm?token=${READ_TOKEN}`)).status).to.equal(200);
  });
});
