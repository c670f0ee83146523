/** The publish WebSocket with a client that is not a browser: its token, its limits, its refusals. */
import { expect } from 'chai';
import { WebSocket } from 'ws';
import type { StreamStats } from '../../src/protocol.js';
import { ffmpegWebm } from '../helpers/media.js';
import { freePort, getJson, waitFor } from '../helpers/relay.js';
import { PUBLISH_TOKEN, startWithConfig } from './helpers.js';

const tokenProtocol = (token: string) => `webm-relay.token.${Buffer.from(token).toString('base64url')}`;

interface Outcome {
  /** The Sec-WebSocket-Protocol the relay answered with (undefined: none). */
  protocolHeader?: string;
  closeCode: number | null;
  closeReason: string;
  handshakeStatus: number | null;
  messages: string[];
}

/** Connects, runs `act` once open, and reports how the relay answered within `ms`. */
function publishSocket(url: string, act: (ws: WebSocket) => void, ms = 5000, protocols: string[] = [], headers: Record<string, string> = {}): Promise<Outcome> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, protocols, { headers });
    const outcome: Outcome = { closeCode: null, closeReason: '', handshakeStatus: null, messages: [] };
    const done = () => {
      clearTimeout(timer);
      ws.terminate();
      resolve(outcome);
    };
    const timer = setTimeout(done, ms);
    ws.on('upgrade', (res) => (outcome.protocolHeader = res.headers['sec-websocket-protocol'] as string | undefined));
    ws.on('open', () => act(ws));
    ws.on('message', (data) => outcome.messages.push(String(data)));
    ws.on('unexpected-response', (_req, res) => {
      outcome.handshakeStatus = res.statusCode ?? 0;
      done();
    });
    ws.on('close', (code, reason) => {
      outcome.closeCode = code;
      outcome.closeReason = String(reason);
      done();
    });
    ws.on('error', () => {});
  });
}

describe('publish: the publish WebSocket (tokens, limits, refusals)', function () {
  this.timeout(60_000);
  let relay: Awaited<ReturnType<typeof startWithConfig>>;
  let ws: string;

  before(async () => {
    const port = await freePort();
    relay = await startWithConfig(
      ['streams:', '  guest:', `    publish: { token: ${PUBLISH_TOKEN} }`, '    max-element-size: 64K', '  stage:', `    listen: tcp://127.0.0.1:${port}`, ''].join('\n'),
    );
    ws = relay.url.replace('http:', 'ws:');
  });
  after(async () => {
    await relay?.stop();
  });

  it('takes live WebM (real ffmpeg output) with ?token= and reports the viewers', async () => {
    const media = ffmpegWebm({ seconds: 4, width: 320, height: 180 });
    const outcome = publishSocket(
      `${ws}/guest/publish?token=${PUBLISH_TOKEN}`,
      (socket) => {
        // Sent at once, before the token is checked: the relay keeps what comes meanwhile.
        for (let at = 0; at < media.bytes.length; at += 16 << 10) socket.send(media.bytes.subarray(at, at + (16 << 10)));
      },
      4000,
    );
    await waitFor('the stream to be live', async () => (await getJson<StreamStats>(`${relay.url}/api/streams/guest`)).live, 10_000);
    const result = await outcome;
    expect(result.closeCode, JSON.stringify(result)).to.equal(null);
    expect(JSON.parse(result.messages[0])).to.deep.include({ type: 'publishing', viewers: 0 });
    const stats = await getJson<StreamStats>(`${relay.url}/api/streams/guest`);
    expect(stats.ingest.bytesIn).to.equal(media.bytes.length);
    expect(stats.clusters).to.be.greaterThan(2);
  });

  it('refuses: no token (4401), a wrong one (4403), a stream without a publish token (4405), an unknown stream (404), a message over max-element-size (1009)', async () => {
    const noAuth = await publishSocket(`${ws}/guest/publish`, (socket) => socket.send(JSON.stringify({ type: 'hello' })));
    expect(noAuth.closeCode, JSON.stringify(noAuth)).to.equal(4401);
    const wrong = await publishSocket(`${ws}/guest/publish`, (socket) => socket.send(JSON.stringify({ type: 'auth', token: 'not-the-token-0123456789' })));
    expect(wrong.closeCode).to.equal(4403);
    expect(wrong.closeReason).to.equal('wrong publish token');
    const notPublishable = await publishSocket(`${ws}/stage/publish?token=${PUBLISH_TOKEN}`, () => {});
    expect(notPublishable.closeCode).to.equal(4405);
    const unknown = await publishSocket(`${ws}/nobody/publish?token=${PUBLISH_TOKEN}`, () => {});
    expect(unknown.handshakeStatus).to.equal(404);
    const tooLarge = await publishSocket(`${ws}/guest/publish`, (socket) => {
      socket.send(JSON.stringify({ type: 'auth', token: PUBLISH_TOKEN }));
      socket.send(Buffer.alloc(100 << 10));
    });
    expect(tooLarge.closeCode, JSON.stringify(tooLarge)).to.equal(1009);
    expect(relay.log()).to.match(/guest: publish websocket from 127\.0\.0\.1: refused \(missing token\)/);
    expect(relay.log()).to.match(/a message over max-element-size \(65536 bytes\)/);
  });

  it('takes the token as a subprotocol (what the publish page sends: no token in the URL) and answers with webm-relay.publish alone', async () => {
    const before = (await getJson<StreamStats>(`${relay.url}/api/streams/guest`)).ingest.producers;
    const media = ffmpegWebm({ seconds: 3, width: 320, height: 180 });
    const outcome = publishSocket(
      `${ws}/guest/publish`,
      (socket) => {
        for (let at = 0; at < media.bytes.length; at += 16 << 10) socket.send(media.bytes.subarray(at, at + (16 << 10)));
      },
      3000,
      ['webm-relay.publish', tokenProtocol(PUBLISH_TOKEN)],
    );
    await waitFor('a new producer', async () => (await getJson<StreamStats>(`${relay.url}/api/streams/guest`)).ingest.producers > before, 10_000);
    const result = await outcome;
    expect(result.closeCode, JSON.stringify(result)).to.equal(null);
    expect(result.protocolHeader, 'the echoed subprotocol: the name, never the token').to.equal('webm-relay.publish');
    expect(JSON.parse(result.messages[0])).to.deep.include({ type: 'publishing' });

    const wrong = await publishSocket(`${ws}/guest/publish`, () => {}, 5000, ['webm-relay.publish', tokenProtocol('not-the-token-0123456789')]);
    expect(wrong.closeCode, JSON.stringify(wrong)).to.equal(4403);
    expect(wrong.protocolHeader).to.equal('webm-relay.publish');
    // A token in any characters (base64url carries them); a subprotocol wins over ?token=.
    const wrongButQueryRight = await publishSocket(`${ws}/guest/publish?token=${PUBLISH_TOKEN}`, () => {}, 5000, ['webm-relay.publish', tokenProtocol('wrong tøken, with spaces')]);
    expect(wrongButQueryRight.closeCode).to.equal(4403);
    expect(relay.log()).not.to.include(PUBLISH_TOKEN);
  });

  it('refuses a publish WebSocket from another site\'s page (Origin not the relay\'s own nor in allow-origins): 403 in the handshake', async () => {
    const foreign = await publishSocket(`${ws}/guest/publish`, () => {}, 5000, ['webm-relay.publish', tokenProtocol(PUBLISH_TOKEN)], { Origin: 'http://elsewhere.example' });
    expect(foreign.handshakeStatus, JSON.stringify(foreign)).to.equal(403);
    await waitFor('the refusal in the log', () => /guest: publish websocket from 127\.0\.0\.1: refused, origin http:\/\/elsewhere\.example/.test(relay.log()), 5000);
    // The relay's own page (Origin = the Host it asked) gets in as far as the token check.
    const own = await publishSocket(`${ws}/guest/publish`, () => {}, 5000, ['webm-relay.publish', tokenProtocol('not-the-token-0123456789')], { Origin: relay.url });
    expect(own.closeCode, JSON.stringify(own)).to.equal(4403);
  });
});
