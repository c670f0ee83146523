import { expect } from 'chai';
import net from 'node:net';
import { waitFor, type RunningRelay } from '../helpers/relay.js';
import { gstProducer, HttpViewer, killTracked, startTcpRelay } from '../helpers/faults.js';

const EBML_MAGIC = Buffer.from([0x1a, 0x45, 0xdf, 0xa3]);
const CLUSTER_ID = Buffer.from([0x1f, 0x43, 0xb6, 0x75]);

interface RawAnswer {
  statusLine: string;
  headers: Record<string, string>;
  body: Buffer;
}

/** Sends `request` as written and reads what comes back for `ms`: the head parsed, the body as it came. */
async function raw(port: number, request: string, ms: number): Promise<RawAnswer> {
  const socket = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.write(request);
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    socket.once('close', () => (clearTimeout(timer), resolve()));
  });
  socket.destroy();
  const all = Buffer.concat(chunks);
  const headEnd = all.indexOf('\r\n\r\n');
  expect(headEnd, `no response head in ${JSON.stringify(all.subarray(0, 200).toString('latin1'))}`).to.be.greaterThan(0);
  const [statusLine, ...lines] = all.subarray(0, headEnd).toString('latin1').split('\r\n');
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { statusLine, headers, body: all.subarray(headEnd + 4) };
}

/** The data of an HTTP/1.1 chunked body, up to its last whole chunk. */
function dechunk(body: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const lineEnd = body.indexOf('\r\n', at);
    if (lineEnd < 0) break;
    const size = parseInt(body.subarray(at, lineEnd).toString('latin1'), 16);
    if (!(size > 0) || lineEnd + 2 + size + 2 > body.length) break;
    parts.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
    at = lineEnd + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

/**
 * `/<name>.webm` is answered before the relay's other routes (see src/server/app.ts):
 * every form of the request a client or proxy sends must still get the stream, with
 * the same head, and everything else must still reach those routes.
 */
describe('GET /<name>.webm in every form a client sends it', function () {
  this.timeout(60_000);
  let relay: RunningRelay | null = null;
  let warm: HttpViewer | null = null;

  before(async () => {
    const started = await startTcpRelay();
    relay = started.relay;
    gstProducer(started.ingestPort);
    warm = new HttpViewer(`${relay.url}/live.webm`);
    await waitFor('media at a first viewer', () => warm!.bytes > 20_000, 20_000);
  });

  after(async () => {
    warm?.close();
    await relay?.stop('SIGKILL');
    await killTracked();
  });

  const port = () => Number(new URL(relay!.url).port);
  /** `framing`: how the body is delimited (a HEAD answer has none to delimit). */
  const expectStreamHead = (answer: RawAnswer, framing: 'chunked' | 'close' | 'none') => {
    expect(answer.statusLine).to.equal(`HTTP/1.1 200 OK`);
    expect(answer.headers).to.include({
      'content-type': 'video/webm',
      'cache-control': 'no-store',
      'x-accel-buffering': 'no',
      'accept-ranges': 'none',
      'x-content-type-options': 'nosniff',
      connection: 'close',
      'access-control-allow-origin': '*',
    });
    if (framing === 'chunked') expect(answer.headers['transfer-encoding']).to.equal('chunked');
    else expect(answer.headers).to.not.have.property('transfer-encoding');
  };
  const expectWebm = (data: Buffer) => {
    expect(data.subarray(0, 4).equals(EBML_MAGIC), `starts with ${data.subarray(0, 8).toString('hex')}`).to.equal(true);
    expect(data.indexOf(CLUSTER_ID), 'a cluster within a second').to.be.greaterThan(0);
  };

  it('origin form, HTTP/1.1, with a query string: a chunked WebM stream', async () => {
    const answer = await raw(port(), 'GET /live.webm?from=test HTTP/1.1\r\nHost: relay\r\n\r\n', 1500);
    expectStreamHead(answer, 'chunked');
    expectWebm(dechunk(answer.body));
  });

  it('absolute form, as a forward proxy sends it: the same stream', async () => {
    const answer = await raw(port(), `GET http://127.0.0.1:${port()}/live.webm HTTP/1.1\r\nHost: 127.0.0.1:${port()}\r\n\r\n`, 1500);
    expectStreamHead(answer, 'chunked');
    expectWebm(dechunk(answer.body));
  });

  it('HTTP/1.0: the WebM bytes unframed, ended by the connection', async () => {
    const answer = await raw(port(), 'GET /live.webm HTTP/1.0\r\n\r\n', 1500);
    expectStreamHead(answer, 'close');
    expectWebm(answer.body);
  });

  it('HEAD: the stream\'s head and no body', async () => {
    const answer = await raw(port(), 'HEAD /live.webm HTTP/1.1\r\nHost: relay\r\n\r\n', 1000);
    expectStreamHead(answer, 'none');
    expect(answer.body.length).to.equal(0);
  });

  it('a name no stream has, and a method that does not watch, still get the relay\'s answers', async () => {
    const missing = await raw(port(), 'GET /nope.webm HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n', 1000);
    expect(missing.statusLine).to.equal('HTTP/1.1 404 Not Found');
    expect(missing.body.toString()).to.equal('no stream named "nope"\n');
    const post = await raw(port(), 'POST /live.webm HTTP/1.1\r\nHost: relay\r\nContent-Length: 0\r\nConnection: close\r\n\r\n', 1000);
    expect(post.statusLine).to.equal('HTTP/1.1 405 Method Not Allowed');
    expect(post.headers.allow).to.equal('GET, HEAD, PUT, OPTIONS');
  });
});
