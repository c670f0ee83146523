import { expect } from 'chai';
import { ENGINES, EngineHungError, launchEngine, type Engine, type EnginePage } from '../helpers/engines.js';
import { installQuality, readQuality, type PlaybackQuality } from '../helpers/quality.js';
import { gstChildren, gstProducer, killTracked, startTcpRelay, stopProcess } from '../helpers/faults.js';
import { freePort, sleep, startRelay, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { clock, report, retryOnceIfHung, snapshot, waitPlaying, waitUntil } from './common.js';

const CODECS = ['vp8', 'vp9'] as const;
type Codec = (typeof CODECS)[number];

/** Small pictures: six browsers' worth of decoding and two encoders share two cores with other tests. */
const SMALL = ['--width', '320', '--height', '240', '--video-bitrate', '400'];

function expectGoodPlayback(label: string, q: PlaybackQuality, seconds: number, extra: { targetLatency: number }): void {
  const detail = `${label}: ${JSON.stringify({ q, extra })}`;
  expect(q.error, detail).to.equal(null);
  expect(q.firstFrameMs, detail).to.not.equal(null);
  expect(q.firstFrameMs!, detail).to.be.below(10_000);
  // The clock ran for most of the time (a loaded machine may cost a second or two).
  expect(q.playedS, detail).to.be.at.least(seconds * 0.7);
  expect(q.stallsAfterSettle, detail).to.be.at.most(2);
  // The target behind live is built on the pacing the relay measures and rises after
  // stalls (up to 3 s): on a loaded machine one stall at the start took it to 1.66 s and
  // the lag took the rest of the run to come down to it. The player is held to within
  // 2 s of live or half a second of its target, and the target to below 2.5 s.
  expect(extra.targetLatency, detail).to.be.below(2.5);
  expect(q.lagMedianS, detail).to.be.below(Math.max(2, extra.targetLatency + 0.5));
}

describe('player in every engine: Chromium, Firefox, WebKit; VP8 and VP9', function () {
  this.timeout(240_000);
  const relays = {} as Record<Codec, RunningRelay>;

  before(async function () {
    const [vp8, vp9] = await Promise.all(CODECS.map((codec) => startRelay([...SMALL, '--video-codec', codec])));
    relays.vp8 = vp8;
    relays.vp9 = vp9;
    await Promise.all(CODECS.map((codec) => waitLive(relays[codec], 20_000)));
  });

  after(async function () {
    await Promise.all(CODECS.map((codec) => relays[codec]?.stop()));
    await killTracked();
  });

  for (const name of ENGINES) {
    describe(name, function () {
      let engine: Engine;
      const pages: EnginePage[] = [];
      const open = async (url: string) => {
        const page = await engine.newPage();
        pages.push(page);
        await page.goto(url);
        return page;
      };

      before(async function () {
        engine = await launchEngine(name);
        console.log(`      ${engine.version}`);
      });

      const closePages = async () => {
        for (const page of pages.splice(0)) await page.close().catch(() => {});
      };
      afterEach(closePages);
      /** A test that starts over once, with fresh pages, if the browser hangs (a WebKitGTK bug: see EngineHungError). */
      const test = (title: string, body: () => Promise<void>) => it(title, () => retryOnceIfHung(`${name}: ${title}`, body, closePages));

      after(async function () {
        await engine?.close();
      });

      test('player page, VP8 and VP9 at once: first frame, then 20 s of play without stalls or errors', async () => {
        const both = await Promise.all(CODECS.map((codec) => open(`${relays[codec].url}/`)));
        await Promise.all(both.map((page) => installQuality(page)));
        await sleep(20_000);
        for (const [i, codec] of CODECS.entries()) {
          const q = await readQuality(both[i]);
          const s = await snapshot(both[i]);
          const extra = { state: s.state, mediaErrors: s.mediaErrors, target: s.targetLatency, mode: s.latencyMode, pausesUndone: s.unexpectedPauses, unmutesUndone: s.unexpectedUnmutes };
          report(name, engine.version, `player ${codec} 20 s`, q, extra);
          expectGoodPlayback(`${name} ${codec}`, q, 20, s);
          expect(s.state).to.equal('playing');
          expect(s.mediaErrors, JSON.stringify(s)).to.equal(0);
          expect(s.muted, 'the player keeps the video muted until the person unmutes').to.equal(true);
          // WebKit paused the video once a session (its autoplay policy, after a playbackRate
          // change unmuted it) until the player left the rate alone there: a freeze of up to 1 s.
          expect(s.unexpectedPauses, `${name} ${codec}: pauses the player had to undo`).to.equal(0);
        }
      });

      test('plain <video src="/live.webm">, VP8 and VP9: plays', async () => {
        const both = await Promise.all(CODECS.map((codec) => open(`${relays[codec].url}/video.html`)));
        await Promise.all(both.map((page) => installQuality(page)));
        // A plain <video> buffers before it starts (Chromium took 4-6 s on a loaded machine): 12 s to play 4.
        await sleep(12_000);
        for (const [i, codec] of CODECS.entries()) {
          const q = await readQuality(both[i]);
          report(name, engine.version, `<video src> ${codec} 12 s`, q);
          expect(q.error).to.equal(null);
          expect(q.firstFrameMs, JSON.stringify(q)).to.not.equal(null);
          expect(q.playedS, JSON.stringify(q)).to.be.at.least(4);
        }
      });

      test('encoder killed with SIGKILL (both codecs): the relay restarts it and the player plays on by itself', async () => {
        const both = await Promise.all(CODECS.map((codec) => open(`${relays[codec].url}/`)));
        await Promise.all(both.map((page) => waitPlaying(page)));
        for (const codec of CODECS) {
          const pids = gstChildren(relays[codec].process.pid!);
          expect(pids, `${codec} encoder`).to.have.length(1);
          process.kill(pids[0], 'SIGKILL');
        }
        await expectPlaysAgain(both, 'after the encoder was killed');
      });

      test('producer stopped and started again (both codecs): the player plays on by itself', async () => {
        const tcp = await Promise.all(CODECS.map(() => startTcpRelay(SMALL)));
        try {
          const producers = CODECS.map((codec, i) => gstProducer(tcp[i].ingestPort, { videoCodec: codec }));
          await Promise.all(tcp.map(({ relay }) => waitLive(relay, 20_000)));
          const both = await Promise.all(tcp.map(({ relay }) => open(`${relay.url}/`)));
          await Promise.all(both.map((page) => waitPlaying(page)));
          await Promise.all(producers.map((p) => stopProcess(p.process)));
          await sleep(1000);
          CODECS.forEach((codec, i) => gstProducer(tcp[i].ingestPort, { videoCodec: codec }));
          await expectPlaysAgain(both, 'after the producer came back');
        } finally {
          await killTracked();
          await Promise.all(tcp.map(({ relay }) => relay.stop()));
        }
      });

      test('relay stopped and started again on the same port (both codecs): the player reconnects by itself and plays on', async () => {
        const ports = await Promise.all(CODECS.map(() => freePort()));
        const start = () => Promise.all(CODECS.map((codec, i) => startRelay([...SMALL, '--video-codec', codec, '--port', String(ports[i])])));
        let own = await start();
        try {
          await Promise.all(own.map((relay) => waitLive(relay, 20_000)));
          const both = await Promise.all(own.map((relay) => open(`${relay.url}/`)));
          await Promise.all(both.map((page) => waitPlaying(page)));
          await Promise.all(own.map((relay) => relay.stop('SIGTERM')));
          await sleep(1000);
          own = await start();
          await expectPlaysAgain(both, 'after the relay came back');
          for (const [i, page] of both.entries()) expect((await snapshot(page)).reconnects, `${name} ${CODECS[i]} reconnects`).to.be.at.least(1);
        } finally {
          await Promise.all(own.map((relay) => relay.stop()));
        }
      });

      /** Within 20 s the picture moves again: 3 s of the clock in 4 s, the player live, no media error left. */
      async function expectPlaysAgain(both: EnginePage[], what: string): Promise<void> {
        for (const [i, page] of both.entries()) {
          const label = `${name} ${CODECS[i]} ${what}`;
          let last = await clock(page);
          const started = Date.now();
          let runSince = -1;
          let runFrom = 0;
          await waitFor(`${label}: 3 s of playback`, async () => {
            const now = await clock(page);
            const moving = !now.paused && now.t > last.t;
            if (moving && runSince < 0) {
              runSince = Date.now();
              runFrom = last.t;
            } else if (!moving) runSince = -1;
            last = now;
            return runSince > 0 && now.t - runFrom >= 3;
          }, 25_000).catch(async (error: Error) => {
            if (error instanceof EngineHungError) throw error;
            throw new Error(`${error.message}; the player: ${JSON.stringify(await snapshot(page))}`);
          });
          const s = await snapshot(page);
          console.log(`      ${label}: playing again, ${((Date.now() - started) / 1000).toFixed(1)} s after the check began; ${s.starts} starts, ${s.reconnects} reconnects, lag ${s.lag.toFixed(2)} s, state ${s.state}`);
        }
        // ... and each player says it is live again: at once, or after the short
        // "buffering" that a catch-up right after a reconnect may cost (Firefox, VP9).
        for (const page of both) await waitUntil(page, 'the player to say it is live', () => (window as unknown as { player: { state: string } }).player.state === 'playing', 5000);
      }
    });
  }
});
