/**
 * HttpTransport writes each chunk as an HTTP/1.1 chunk straight to the socket; chunks
 * the hub joined with joinFramed for a mostly-HTTP audience are sent as a view of their
 * frame, others are framed in a copy. A real HTTP client must decode the body byte for
 * byte.
 *
 * WebSocketTransport frames media itself and writes it to the upgraded socket, beside
 * the frames `ws` writes (pongs, the init segment, close), a view of the joined frame
 * when the audience is mostly WebSocket: a real `ws` client must read every message
 * whole and in order, at each of RFC 6455's three length encodings.
 */
import { expect } from 'chai';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { HttpTransport, joinFramed, WebSocketTransport } from '../../src/server/transports.js';

/** `size` bytes in two parts, joined as the hub joins a chunk for an audience of `viewers`. */
function joinedFor(viewers: { http: number; ws: number }, size: number, fill: number): Buffer {
  const parts = [Buffer.alloc(size >> 1, fill), Buffer.alloc(size - (size >> 1), 0x5a)];
  const joined = joinFramed(parts, size, viewers);
  expect(joined.equals(Buffer.concat(parts)), `joined ${size}`).to.equal(true);
  return joined;
}

describe('WebSocket transport', () => {
  let server: http.Server;
  let transport: Promise<WebSocketTransport>;

  beforeEach(async () => {
    server = http.createServer();
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
    transport = new Promise((resolve) =>
      server.on('upgrade', (req, socket: Socket, head) => wss.handleUpgrade(req, socket, head, (ws) => resolve(new WebSocketTransport('live', ws, socket, () => ({ waitMs: 40, frameIntervalMs: 33 }))))),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });

  afterEach(() => server.closeAllConnections());

  it('media messages of 1 B to 200 KB arrive whole and in order, between ws\'s own frames', async () => {
    const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/live`);
    const received: { binary: boolean; data: Buffer }[] = [];
    let pongs = 0;
    client.on('message', (data: Buffer, binary) => received.push({ binary, data }));
    client.on('pong', () => pongs++);
    await new Promise((resolve) => client.once('open', resolve));
    expect(client.extensions, 'no extension negotiated').to.equal('');
    const viewer = await transport;

    const sizes = [1, 125, 126, 127, 1000, 65535, 65536, 200_000];
    // Each size three ways: a plain Buffer, joined inside its WebSocket frame, joined inside an HTTP chunk's.
    const sent = sizes.flatMap((size, i) => [Buffer.alloc(size, i + 1), joinedFor({ http: 0, ws: 3 }, size, i), joinedFor({ http: 2, ws: 1 }, size, i)]);
    viewer.sendInit({ segment: { bytes: Buffer.from('init'), info: { mimeType: 'video/webm', tracks: [] } }, version: 1 } as never);
    for (const data of sent) {
      viewer.send(data);
      client.ping();
    }
    viewer.send(sent[2]); // the same Buffer again: the cached frame
    await new Promise<void>((resolve) => {
      const check = () => (received.length === 2 + sent.length + 1 && pongs === sent.length ? resolve() : setTimeout(check, 10));
      check();
    });
    expect(received[0].binary).to.equal(false);
    expect(JSON.parse(received[0].data.toString())).to.include({ type: 'stream' });
    expect(JSON.parse(received[0].data.toString()).pacing, 'the pacing the stream reports').to.deep.equal({ waitMs: 40, frameIntervalMs: 33 });
    expect(received[1].data.toString()).to.equal('init');
    const media = received.slice(2);
    expect(media.every((m) => m.binary)).to.equal(true);
    expect(media.map((m) => m.data.length)).to.deep.equal([...sent.map((data) => data.length), sent[2].length]);
    media.forEach((m, i) => expect(m.data.equals(i < sent.length ? sent[i] : sent[2]), `message ${i}`).to.equal(true));

    viewer.close('shutdown');
    const code = await new Promise((resolve) => client.once('close', resolve));
    expect(code).to.equal(1001);
    viewer.send(Buffer.from('after close'));
    expect(received).to.have.length(2 + sent.length + 1);
  });
});

describe('HTTP transport', () => {
  // The relay sets its headers one by one; a head written with writeHead() is held by
  // Node until the first write, and must still reach the socket before any media.
  const startResponse = {
    'headers set one by one': (res: http.ServerResponse) => res.setHeader('Content-Type', 'video/webm'),
    'a head written with writeHead()': (res: http.ServerResponse) => res.writeHead(200, { 'Content-Type': 'video/webm' }),
  };
  for (const [how, start] of Object.entries(startResponse)) it(`chunks joined in their frame, plain Buffers and views of a joined chunk decode byte for byte (${how})`, async () => {
    let transport!: HttpTransport;
    const server = http.createServer((_req, res) => {
      start(res);
      transport = new HttpTransport(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const body = new Promise<Buffer>((resolve, reject) =>
        http.get(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('end', () => resolve(Buffer.concat(parts)));
          res.on('error', reject);
        }),
      );
      while (!transport) await new Promise((resolve) => setTimeout(resolve, 5));
      const expected: Buffer[] = [];
      const send = (data: Buffer) => {
        transport.send(data);
        expected.push(Buffer.from(data));
      };
      transport.sendInit({ segment: { bytes: Buffer.from('init'), info: { mimeType: 'video/webm', tracks: [] } }, version: 1 } as never, false);
      expected.push(Buffer.from('init'));
      for (const size of [1, 15, 16, 255, 4095, 4096, 65536, 200_000]) {
        const joined = joinedFor({ http: 3, ws: 1 }, size, size & 0xff);
        send(joined);
        send(joined); // again: the same frame
        if (size > 1) send(joined.subarray(size >> 1)); // a keyframe's part of a chunk: framed apart
        send(joinedFor({ http: 1, ws: 2 }, size, size & 0xff)); // joined inside a WebSocket frame: framed apart
      }
      send(Buffer.from('a plain Buffer'));
      transport.close('shutdown');
      const received = await body;
      expect(received.length).to.equal(Buffer.concat(expected).length);
      expect(received.equals(Buffer.concat(expected))).to.equal(true);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
