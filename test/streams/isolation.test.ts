/**
 * What happens to one stream's producer is nobody else's business: garbage and a
 * SIGKILLed producer on the TCP stream while the viewers of the two encoder streams
 * (HTTP, and Chromium's player) keep going; then the viewer limits, per stream and
 * for the whole relay, as the config file sets them.
 */
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import type { Browser, Page } from 'playwright-core';
import { launchBrowser, playerSnapshot, sampleVideo, watchErrors } from '../helpers/browser.js';
import { HttpViewer, WsViewer, killTracked, logLines, sendIngest, sleep, type Producer } from '../helpers/faults.js';
import { capture, freePort, trimToCompleteBlocks, waitFor } from '../helpers/relay.js';
import { ffmpegTcpProducer, startConfigRelay, streamStats, waitListening, waitStreamsLive, type ConfigRelay } from '../helpers/streams.js';
import { decodeErrors, parseStream, shutdown } from '../helpers/viewers.js';

/** A count of bytes sampled over time, to find where it stood still. */
class ByteClock {
  readonly samples: { at: number; bytes: number }[] = [];
  private readonly timer: NodeJS.Timeout;
  constructor(read: () => number | Promise<number>, everyMs = 100) {
    this.timer = setInterval(async () => {
      const at = Date.now();
      const bytes = await read();
      this.samples.push({ at, bytes });
    }, everyMs);
  }
  stop(): void {
    clearInterval(this.timer);
  }
  bytesBetween(from: number, to: number): number {
    const at = (t: number) => [...this.samples].reverse().find((s) => s.at <= t)?.bytes ?? 0;
    return at(to) - at(from);
  }
  /** The longest time between `from` and `to` during which the count did not move, ms. */
  longestPause(from: number, to: number): number {
    let longest = 0;
    let since = from;
    let last = -1;
    for (const s of this.samples) {
      if (s.at < from || s.at > to) continue;
      if (s.bytes !== last) {
        if (last >= 0) longest = Math.max(longest, s.at - since);
        since = s.at;
        last = s.bytes;
      }
    }
    return Math.max(longest, to - since);
  }
}

describe('streams: isolation and viewer limits', function () {
  this.timeout(120_000);
  let relay: ConfigRelay | null = null;
  let browser: Browser | null = null;
  let stagePort = 0;
  let stageProducer: Producer | null = null;
  const viewers: (HttpViewer | WsViewer)[] = [];

  before(async function () {
    stagePort = await freePort();
    relay = await startConfigRelay(
      [
        '# the whole relay',
        'max-viewers: 6',
        'streams:',
        '  cam:',
        '    encoder: { video-source: videotestsrc is-live=true pattern=smpte horizontal-speed=4, width: 320, height: 240, framerate: 15, video-bitrate: 300, audio-bitrate: 32 }',
        '  ball:',
        '    encoder: { video-source: videotestsrc is-live=true pattern=ball, audio-source: none, width: 320, height: 180, framerate: 15, video-bitrate: 200 }',
        '    max-viewers: 2',
        '  stage:',
        `    listen: tcp://127.0.0.1:${stagePort}`,
        '',
      ].join('\n'),
    );
    await waitListening(relay, stagePort);
    stageProducer = ffmpegTcpProducer(stagePort, { pattern: 'testsrc2', size: '400x224', codec: 'vp8' });
    await waitStreamsLive(relay, ['cam', 'ball', 'stage'], 25_000, [stageProducer]);
  });

  after(async function () {
    for (const viewer of viewers) viewer.close();
    await browser?.close().catch(() => {});
    await killTracked();
    await shutdown(relay);
  });

  it('garbage, then a SIGKILLed producer, then a new one on "stage": the viewers of "cam" and "ball" and a Chromium player see nothing of it', async function () {
    const relayUrl = relay!.url;
    const cam = new HttpViewer(`${relayUrl}/cam.webm`);
    const ball = new HttpViewer(`${relayUrl}/ball.webm`);
    viewers.push(cam, ball);
    // What each viewer gets, beside what its producer delivers: on a machine too busy for the
    // encoders, a viewer's pause that its producer had too is not the relay's doing.
    const clocks = { cam: new ByteClock(() => cam.bytes), ball: new ByteClock(() => ball.bytes) };
    const ingest = {
      cam: new ByteClock(async () => (await streamStats(relay!, 'cam')).ingest.bytesIn, 250),
      ball: new ByteClock(async () => (await streamStats(relay!, 'ball')).ingest.bytesIn, 250),
    };
    browser = await launchBrowser();
    const page: Page = await (await browser.newContext({ viewport: { width: 640, height: 400 } })).newPage();
    const pageErrors = watchErrors(page);
    await page.goto(`${relayUrl}/cam/`);
    await page.waitForFunction(() => (window as unknown as { player?: { state: string } }).player?.state === 'playing', null, { timeout: 20_000 });
    const statsBefore = { cam: await streamStats(relay!, 'cam'), ball: await streamStats(relay!, 'ball') };

    // A while with all three producers healthy.
    await sleep(3000);
    const faultStart = Date.now();
    const videoAtFault = await sampleVideo(page);

    // 1. The producer of "stage" is killed outright: no end of stream, no FIN from ffmpeg's side.
    stageProducer!.process.kill('SIGKILL');
    await waitFor('the relay to see the stage producer gone', () => /stage: tcp [^:]+:\d+: producer (disconnected|ended)/.test(relay!.log()), 10_000);
    // 2. Garbage in its place: random bytes, then a real header followed by random bytes.
    const random = await sendIngest(stagePort, randomBytes(256 << 10), { end: false, timeoutMs: 5000 });
    expect(random.closedByPeer, 'random bytes are cut off').to.equal(true);
    const stageInit = parseStream((await capture(`${relayUrl}/stage.webm`, 300)).body).init;
    const headerThenGarbage = Buffer.concat([stageInit ?? Buffer.alloc(0), Buffer.from([0x1f, 0x43, 0xb6, 0x75, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), randomBytes(128 << 10)]);
    // Random bytes inside a cluster may read as elements to skip: the relay cannot tell them from
    // a slow producer, so this one hangs up by itself.
    await sendIngest(stagePort, headerThenGarbage, { end: true, timeoutMs: 5000 });
    // 3. A new producer: the stream comes back.
    const producersBefore = (await streamStats(relay!, 'stage')).ingest.producers;
    stageProducer = ffmpegTcpProducer(stagePort, { pattern: 'testsrc2', size: '400x224', codec: 'vp8' });
    await waitFor('a new stage producer to be live', async () => {
      const stage = await streamStats(relay!, 'stage');
      return stage.ingest.producers > producersBefore && stage.ingest.state === 'receiving' && stage.live;
    }, 20_000);
    await sleep(1500);
    const faultEnd = Date.now();
    const videoAfter = await sampleVideo(page);
    const player = await playerSnapshot(page);
    for (const clock of [clocks.cam, clocks.ball, ingest.cam, ingest.ball]) clock.stop();

    const rejected = logLines(relay!.log(), /stage: tcp .*: rejected: /);
    expect(rejected.length, relay!.log()).to.be.at.least(1);
    expect(logLines(relay!.log(), /(cam|ball): .*rejected/), 'nothing rejected on the other streams').to.deep.equal([]);

    const faultMs = faultEnd - faultStart;
    const report: string[] = [];
    for (const [name, viewer] of Object.entries({ cam, ball })) {
      const clock = clocks[name as 'cam' | 'ball'];
      const produced = ingest[name as 'cam' | 'ball'];
      const got = clock.bytesBetween(faultStart, faultEnd);
      const delivered = produced.bytesBetween(faultStart, faultEnd);
      const pause = clock.longestPause(faultStart, faultEnd);
      const producerPause = produced.longestPause(faultStart, faultEnd);
      report.push(
        `${name}: viewer got ${(got / 1000).toFixed(0)} kB of the producer's ${(delivered / 1000).toFixed(0)} kB, ` +
          `longest pause ${pause} ms (its producer's ${producerPause} ms)`,
      );
      // Within a cluster or so of what came in (the windows' edges cut differently).
      expect(got, report.at(-1)).to.be.at.least(delivered * 0.6 - 20_000);
      expect(pause, report.at(-1)).to.be.below(Math.max(2500, producerPause + 1500));
      expect(viewer.outcome, name).to.equal('open');
      const parsed = parseStream(viewer.body);
      expect(parsed.headers, `${name}: one init segment, no restart`).to.equal(1);
      expect(parsed.errors, name).to.deep.equal([]);
      expect(await decodeErrors(trimToCompleteBlocks(viewer.body)), `${name} decodes`).to.deep.equal([]);
      const stats = await streamStats(relay!, name);
      const before = statsBefore[name as 'cam' | 'ball'];
      expect(stats.ingest.producers, name).to.equal(before.ingest.producers);
      expect(stats.initSegments, name).to.equal(before.initSegments);
      expect(stats.encoderRestarts, name).to.equal(0);
    }

    const detail = JSON.stringify({ videoAtFault, videoAfter, player, pageErrors });
    expect(videoAfter.error, detail).to.equal(null);
    // Played on (a machine this busy starves Chromium too: no rate is asked of it here).
    expect(videoAfter.currentTime - videoAtFault.currentTime, detail).to.be.at.least(1.5);
    expect(videoAfter.decodedFrames - videoAtFault.decodedFrames, detail).to.be.at.least(3);
    expect(player.reconnects, detail).to.equal(0);
    expect(player.mediaErrors, detail).to.equal(0);
    console.log(`      ${(faultMs / 1000).toFixed(1)} s of faults on stage: ${report.join('; ')}; Chromium played ${(videoAfter.currentTime - videoAtFault.currentTime).toFixed(1)} s`);
  });

  it('max-viewers of a stream turns away its next viewer (503, WebSocket 1013) while another stream still admits; the relay-wide max-viewers holds across streams', async function () {
    const url = relay!.url;
    const ws = url.replace('http:', 'ws:');
    const stats = async () => (await (await fetch(`${url}/api/stats`)).json()) as { connections: number };
    const connectionsAre = (n: number) => waitFor(`${n} viewer connections`, async () => (await stats()).connections === n, 10_000);
    // From the test above: HTTP viewers of cam and ball, and Chromium's player of cam.
    await connectionsAre(3);

    // "ball" allows 2: one HTTP viewer so far, a WebSocket viewer makes two.
    const ballWs = new WsViewer(`${ws}/ball`);
    viewers.push(ballWs);
    await ballWs.opened;
    await waitFor('the ball WebSocket viewer to get its stream', () => ballWs.streamMessages().length > 0, 10_000);
    await connectionsAre(4);
    const ballHttp = await capture(`${url}/ball.webm`, 2000);
    expect(ballHttp.status, 'a third viewer of ball over HTTP').to.equal(503);
    expect(ballHttp.body.toString()).to.match(/too many viewers/);
    const ballWs3 = new WsViewer(`${ws}/ball`);
    await ballWs3.closed;
    expect(ballWs3.closeCode, 'a third viewer of ball over WebSocket').to.equal(1013);
    // ... while cam, with the same number of viewers, still admits.
    const camHttp = await capture(`${url}/cam.webm`, 1500);
    expect(camHttp.status).to.equal(200);
    expect(parseStream(camHttp.body).clusters.length).to.be.at.least(1);
    expect((await streamStats(relay!, 'ball')).rejected).to.equal(2);
    expect((await streamStats(relay!, 'cam')).rejected).to.equal(0);
    await connectionsAre(4);

    // The relay allows 6 viewers in all: two more of cam fill it.
    const more = [new HttpViewer(`${url}/cam.webm`), new HttpViewer(`${url}/stage.webm`)];
    viewers.push(...more);
    await connectionsAre(6);
    const overRelay = await capture(`${url}/stage.webm`, 2000);
    expect(overRelay.status, 'a seventh viewer, of a stream with room of its own').to.equal(503);
    const overRelayWs = new WsViewer(`${ws}/cam`);
    await overRelayWs.closed;
    expect(overRelayWs.closeCode).to.equal(1013);
    expect(more.map((v) => v.status)).to.deep.equal([200, 200]);

    // One leaves: there is room again.
    more[0].close();
    await connectionsAre(5);
    const again = await capture(`${url}/stage.webm`, 1500);
    expect(again.status).to.equal(200);
    expect(parseStream(again.body).clusters.length).to.be.at.least(1);
  });
});
