/**
 * Misbehaving viewers: WebSocket junk and oversized messages, connections that come
 * and vanish by the thousand, malformed HTTP, paths that try to leave public/.
 */
import { expect } from 'chai';
import http from 'node:http';
import net from 'node:net';
import WebSocket from 'ws';
import { startRelay, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { fdCount, rawRequest, sleep, vmRssKb, waitStats, WsViewer } from '../helpers/faults.js';

const SMALL = ['--width', '320', '--height', '240', '--video-bitrate', '300', '--audio-bitrate', '32'];

describe('reliability: misbehaving viewers', function () {
  this.timeout(120_000);
  let relay: RunningRelay;
  const open: { close(): void }[] = [];

  before(async function () {
    this.timeout(30_000);
    // A short segment window: a 60 s one fills during these tests and its growth would
    // read as a leak in the RSS measured below.
    relay = await startRelay([...SMALL, '--ws-max-payload', '1K', '--segment-window', '2']);
    await waitLive(relay, 20_000);
  });

  afterEach(() => {
    for (const o of open.splice(0)) o.close();
  });

  after(async () => {
    await relay?.stop('SIGKILL');
  });

  const wsUrl = () => `ws://127.0.0.1:${relay.port}/live`;

  it('a WebSocket client sending junk is ignored, one sending more than --ws-max-payload is closed with 1009; another viewer keeps receiving', async () => {
    const watcher = new WsViewer(wsUrl());
    open.push(watcher);
    await watcher.opened;
    await waitFor('the watching viewer to get media', () => watcher.binaryBytes > 10_000, 10_000);

    const junk = new WsViewer(wsUrl());
    open.push(junk);
    await junk.opened;
    const send = (data: string | Buffer) => new Promise<void>((resolve, reject) => junk.socket.send(data, (e) => (e ? reject(e) : resolve())));
    await send('hello');
    await send('{"type":');
    await send('{"type":"shutdown"}');
    await send(Buffer.from([0xde, 0xad, 0xbe, 0xef]));
    for (let i = 0; i < 500; i++) await send(Buffer.alloc(1000, i));
    await send('{"type":"ping"}');
    await waitFor('a pong after the junk', () => junk.messages.some((m) => m.text?.includes('"pong"')), 5000);
    // The pong tells how video arrives: the encoder's 30 frames a second are at least 33 ms apart.
    const pong = JSON.parse(junk.messages.find((m) => m.text?.includes('"pong"'))!.text!);
    expect(pong.pacing.frameIntervalMs, JSON.stringify(pong)).to.be.within(30, 5000);
    expect(pong.pacing.waitMs, JSON.stringify(pong)).to.be.above(0);
    expect(junk.closeCode, 'junk under the limit does not close the socket').to.equal(null);
    // Still a viewer: it gets media.
    await waitFor('the junk client to get media', () => junk.binaryBytes > 10_000, 10_000);

    const before = watcher.binaryBytes;
    junk.socket.send(Buffer.alloc(64 * 1024, 0x41));
    await Promise.race([junk.closed, sleep(5000)]);
    expect(junk.closeCode, 'close code for a message over --ws-max-payload').to.equal(1009);
    await waitFor('the watcher to keep receiving', () => watcher.binaryBytes > before + 30_000, 10_000);
    expect(watcher.closeCode).to.equal(null);
    await waitStats(relay.url, 'the junk client removed', (s) => s.viewersByTransport.ws === 1);
  });

  it('thousands of HTTP and WebSocket viewers that connect and vanish leak no file descriptors, memory or viewers', async function () {
    this.timeout(240_000);
    const pid = relay.process.pid!;
    const url = new URL(relay.url);
    const port = Number(url.port);

    /** One HTTP viewer that vanishes: before the response, after the headers, or after some media. */
    const httpOnce = (style: number) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => socket.destroy(), 5000);
        const socket = net.connect(port, '127.0.0.1');
        socket.on('error', () => {});
        socket.on('close', () => {
          clearTimeout(timer);
          resolve();
        });
        socket.on('connect', () => {
          socket.write('GET /live.webm HTTP/1.1\r\nHost: x\r\n\r\n');
          if (style === 0) socket.destroy();
        });
        let got = 0;
        socket.on('data', (chunk: Buffer) => {
          got += chunk.length;
          if (style === 1 || (style === 2 && got > 2000)) socket.destroy();
        });
      });
    /** One WebSocket viewer that vanishes: mid-handshake, at open, or after its first media. */
    const wsOnce = (style: number) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => ws.terminate(), 5000);
        const ws = new WebSocket(`ws://127.0.0.1:${port}/live`);
        ws.on('error', () => {});
        ws.on('close', () => {
          clearTimeout(timer);
          resolve();
        });
        if (style === 0) ws.on('upgrade', () => ws.terminate());
        if (style === 1) ws.on('open', () => ws.terminate());
        if (style === 2) ws.on('message', (_d, isBinary) => isBinary && ws.terminate());
      });
    const churn = async (count: number, batch = 50) => {
      for (let done = 0; done < count; done += batch) {
        const wave: Promise<void>[] = [];
        for (let i = 0; i < batch; i++) {
          wave.push(httpOnce((done + i) % 3));
          wave.push(wsOnce((done + i) % 3));
        }
        await Promise.all(wave);
      }
    };
    // Nobody else watches this relay now: connections still closing from earlier tests finish first.
    const baseline = 0;
    await waitStats(relay.url, 'no viewer connections left from earlier tests', (s) => s.connections === baseline, 20_000);
    const settle = async () => {
      await waitStats(relay.url, 'connections back to the baseline', (s) => s.connections === baseline, 20_000);
    };

    // Warm up (lazy allocations, JIT), then measure.
    await churn(100);
    await settle();
    await sleep(500);
    const fdBefore = fdCount(pid);
    const rssBefore = vmRssKb(pid);
    // Two rounds of 1000 + 1000: a leak grows with every round, a heap that settled does not.
    const t0 = Date.now();
    await churn(1000);
    await settle();
    const rssMiddle = vmRssKb(pid);
    await churn(1000);
    const churnMs = Date.now() - t0;
    await settle();
    // Sockets close asynchronously; give the counts time to come back.
    let fdAfter = fdCount(pid);
    await waitFor('file descriptors back to the baseline', () => (fdAfter = fdCount(pid)) <= fdBefore + 3, 15_000).catch(() => {});
    const rssAfter = vmRssKb(pid);
    const stats = await waitStats(relay.url, 'stats', () => true);
    console.log(
      `      2000 HTTP + 2000 WebSocket in ${churnMs} ms; fds ${fdBefore} → ${fdAfter}; VmRSS ${rssBefore} → ${rssMiddle} (half-way) → ${rssAfter} kB; connections ${baseline} → ${stats.connections}; joins ${stats.joins}`,
    );
    expect(fdAfter, 'open file descriptors').to.be.at.most(fdBefore + 3);
    expect(stats.connections, 'open viewer connections').to.equal(baseline);
    expect(rssAfter - rssBefore, 'VmRSS growth, kB').to.be.below(64 * 1024);
    expect(rssAfter - rssMiddle, 'VmRSS growth in the second round, kB').to.be.below(16 * 1024);
    // And it still serves.
    const check = new WsViewer(wsUrl());
    open.push(check);
    await waitFor('a new viewer to get media', () => check.binaryBytes > 10_000, 10_000);
  });

  it('malformed HTTP requests get 400 (431 for oversized headers) and the relay keeps serving', async () => {
    const watcher = new WsViewer(wsUrl());
    open.push(watcher);
    await waitFor('the watching viewer to get media', () => watcher.binaryBytes > 10_000, 10_000);
    const port = relay.port;
    const cases: [string, string | Buffer, RegExp][] = [
      ['binary garbage', Buffer.from([0, 1, 2, 3, 0xff, 0xfe, 13, 10, 13, 10]), /^HTTP\/1\.1 400 /],
      ['words', 'GARBAGE GARBAGE GARBAGE\r\n\r\n', /^HTTP\/1\.1 400 /],
      ['bad Content-Length', 'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', /^HTTP\/1\.1 400 /],
      ['both Content-Length and chunked', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', /^HTTP\/1\.1 400 /],
      ['header without a colon', 'GET / HTTP/1.1\r\nHost x\r\n\r\n', /^HTTP\/1\.1 400 /],
      ['control character in a header', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n', /^HTTP\/1\.1 400 /],
      ['bad HTTP version', 'GET / HTTP/9.Z\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
      ['space in the path', 'GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
      ['bad chunk size', 'PUT /ingest HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n', /^HTTP\/1\.1 (400|404) /],
      ['oversized headers', `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(100_000)}\r\n\r\n`, /^HTTP\/1\.1 431 /],
    ];
    for (const [name, bytes, expected] of cases) {
      const response = await rawRequest(port, bytes, 5000);
      expect(response, name).to.match(expected);
    }
    const health = await fetch(`${relay.url}/healthz`);
    expect(health.status).to.equal(200);
    const before = watcher.binaryBytes;
    await waitFor('the watcher to keep receiving', () => watcher.binaryBytes > before + 20_000, 10_000);
    expect(relay.process.exitCode).to.equal(null);
  });

  it('paths that try to leave public/ never return the file', async () => {
    // Sanity: the page itself is served, so a 404 below means refused, not broken.
    const page = await rawRequest(relay.port, 'GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(page).to.match(/^HTTP\/1\.1 200 /);
    const paths = [
      '/../package.json',
      '/%2e%2e/package.json',
      '/%2E%2E/package.json',
      '/..%2fpackage.json',
      '/..%2Fpackage.json',
      '/%2e%2e%2fpackage.json',
      '/js/../../package.json',
      '/js/..%2f..%2fpackage.json',
      '/js/%2e%2e/%2e%2e/package.json',
      '/..%5cpackage.json',
      '/..\\package.json',
      '/.%2e/package.json',
      '/%252e%252e/package.json',
      '/....//package.json',
      '/%c0%ae%c0%ae/package.json',
      '/..;/package.json',
      '/../../../../../../etc/passwd',
      '/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
      '//etc/passwd',
      '/../src/cli.ts',
      '/../dist/src/cli.js',
    ];
    for (const path of paths) {
      const response = await rawRequest(relay.port, `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
      const status = /^HTTP\/1\.1 (\d+)/.exec(response)?.[1];
      expect(status, `${path}: ${response.slice(0, 200)}`).to.be.oneOf(['400', '403', '404']);
      expect(response, path).to.not.include('"devDependencies"');
      expect(response, path).to.not.include('webm-relay');
      expect(response, path).to.not.include('root:');
      expect(response, path).to.not.include('parseConfig');
    }
    // Through a client too (it normalises the path; must land inside public/ or nowhere).
    const viaClient = await new Promise<number>((resolve) => http.get(`${relay.url}/../package.json`, (r) => (r.resume(), resolve(r.statusCode ?? 0))));
    expect(viaClient).to.equal(404);
  });
});
