/**
 * Slow viewers: sockets that ask for /live.webm and then read nothing, beside normal
 * viewers, on a relay with small limits and a high bitrate. The normal viewers must
 * not notice; the relay's memory must stay bounded; the stalled sockets are dropped.
 */
import { expect } from 'chai';
import { HttpViewer, fdCount, vmRssKb, waitStats } from '../helpers/faults.js';
import { startRelay, trimToCompleteBlocks, waitLive, type RunningRelay } from '../helpers/relay.js';
import { StalledSocket, decodeErrors, mapLimit, overlap, parseStream, shutdown, sleep } from '../helpers/viewers.js';

const STALLED_PER_WAVE = 8;
const WAVES = 2;

describe('relay: slow viewers (--max-queue 256K --stall-timeout 3, 3 Mbit/s of noise)', function () {
  this.timeout(120_000);
  let relay: RunningRelay;
  const normals: HttpViewer[] = [];
  const stalled: StalledSocket[] = [];

  before(async () => {
    relay = await startRelay([
      '--max-queue', '256K',
      '--stall-timeout', '3',
      '--video-bitrate', '3000',
      // Random noise: the encoder spends its whole budget, every frame.
      '--video-source', 'videotestsrc is-live=true pattern=snow',
    ]);
    await waitLive(relay, 20_000);
  });

  after(async () => {
    for (const v of normals) v.close();
    for (const s of stalled) s.destroy();
    await shutdown(relay);
  });

  it('normal viewers keep up in real time, memory stays bounded, stalled sockets skip and are disconnected', async () => {
    const pid = relay.process.pid!;
    for (let i = 0; i < 3; i++) normals.push(new HttpViewer(`${relay.url}/live.webm`));
    await waitStats(relay.url, 'three viewers', (s) => s.viewers === 3, 5000);
    // Past the GOP a joining viewer is sent at once.
    await sleep(2000);
    const rssBefore = vmRssKb(pid);
    const fdBefore = fdCount(pid);
    let rssMax = rssBefore;
    const rssTimer = setInterval(() => (rssMax = Math.max(rssMax, vmRssKb(pid))), 200);

    const sample = async () => ({
      at: Date.now(),
      viewers: normals.map((v) => v.bytes),
      stats: await waitStats(relay.url, 'stats', () => true),
    });
    const t0 = await sample();
    try {
      for (let wave = 0; wave < WAVES; wave++) {
        const batch = Array.from({ length: STALLED_PER_WAVE }, () => new StalledSocket(relay.port));
        stalled.push(...batch);
        await Promise.all(batch.map((s) => s.connected));
        await sleep(3000);
      }
      // Every stalled socket: once the kernel's socket buffers (about 4 MB here on loopback) and the 256K queue are full, 3 s without progress.
      await waitStats(relay.url, 'every stalled socket to be disconnected', (s) => s.stallDisconnects >= STALLED_PER_WAVE * WAVES, 30_000);
    } finally {
      clearInterval(rssTimer);
    }
    const t1 = await sample();
    const rssAfter = vmRssKb(pid);
    const seconds = (t1.at - t0.at) / 1000;
    const ingestRate = (t1.stats.ingest.bytesIn - t0.stats.ingest.bytesIn) / seconds;
    const rates = normals.map((_, i) => (t1.viewers[i] - t0.viewers[i]) / seconds);
    console.log(
      `      over ${seconds.toFixed(1)} s: ingest ${(ingestRate * 8 / 1000).toFixed(0)} kbit/s; normal viewers ` +
        rates.map((r) => `${(r * 8 / 1000).toFixed(0)} kbit/s (${(r / ingestRate * 100).toFixed(0)}%)`).join(', '),
    );
    console.log(
      `      relay RSS: before ${(rssBefore / 1024).toFixed(1)} MB, max ${(rssMax / 1024).toFixed(1)} MB, after ${(rssAfter / 1024).toFixed(1)} MB ` +
        `(growth ${((rssMax - rssBefore) / 1024).toFixed(1)} MB with ${stalled.length} stalled sockets); ` +
        `skips ${t1.stats.skips}, stallDisconnects ${t1.stats.stallDisconnects}, viewers now ${t1.stats.viewers}`,
    );

    expect(ingestRate * 8, 'the stream runs at a high bitrate').to.be.greaterThan(1_000_000);
    for (const [i, rate] of rates.entries()) {
      expect(normals[i].outcome, `normal viewer ${i}`).to.equal('open');
      expect(rate / ingestRate, `normal viewer ${i}: share of the ingest rate`).to.be.within(0.85, 1.15);
    }
    expect(t1.stats.skips, 'skips').to.be.at.least(STALLED_PER_WAVE * WAVES);
    expect(t1.stats.stallDisconnects, 'stall disconnects').to.equal(STALLED_PER_WAVE * WAVES);
    expect(t1.stats.viewers, 'only the normal viewers are left').to.equal(3);
    expect(rssMax - rssBefore, 'RSS growth, kB').to.be.below(30 * 1024);

    // A socket that still reads nothing is let go of: the relay closes its end (its file descriptors return to where they were).
    await sleep(2500);
    const fdAfter = fdCount(pid);
    console.log(`      relay file descriptors: ${fdBefore} before the stalled sockets, ${fdAfter} after they were disconnected`);
    expect(fdAfter, 'relay file descriptors').to.be.at.most(fdBefore + 1);
    // And once they read again, each sees its connection (or at least its response) end.
    const ends = await Promise.all(stalled.map((s) => s.resumeAndWaitClose(4000)));
    console.log(`      stalled sockets reading again: ${ends.filter((e) => e === 'closed').length} closed, ${ends.filter((e) => e === 'ended').length} response ended, ${ends.filter((e) => e === 'open').length} still streaming`);
    expect(ends.filter((e) => e === 'open').length, 'stalled sockets still streaming').to.equal(0);

    // The normal viewers never skipped: their clusters line up one for one, and decode.
    const bodies = normals.map((v) => v.body);
    const parsed = bodies.map(parseStream);
    for (let i = 1; i < parsed.length; i++) {
      const run = overlap(parsed[0].clusters, parsed[i].clusters);
      if (typeof run === 'string') expect.fail(`normal viewers 0 and ${i}: ${run}`);
      expect(run.compared).to.be.at.least(2);
    }
    const errors = await mapLimit(bodies, 2, (b) => decodeErrors(trimToCompleteBlocks(b)));
    errors.forEach((lines, i) => expect(lines, `decoding normal viewer ${i}`).to.deep.equal([]));
  });
});
