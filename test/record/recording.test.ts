import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import type { Browser } from 'playwright-core';
import type { RecordingEntry } from '../../src/record/library.js';
import { launchBrowser } from '../helpers/browser.js';
import { ffmpegErrors, freePort, sleep, startRelay, type RunningRelay } from '../helpers/relay.js';
import { ENCODER_ARGS, GOP_S, inspect, recordingFiles, tempDir, waitForLog } from './common.js';

/** An entry of /api/recordings/NAME: the library's entry and its URL. */
type Listed = RecordingEntry & { url: string };

const listed = async (relay: RunningRelay, query = ''): Promise<Listed[]> =>
  ((await (await fetch(`${relay.url}/api/recordings/live${query}`)).json()) as { recordings: Listed[] }).recordings;

describe('Recording: files, playback and cuts', function () {
  this.timeout(150_000);
  let relay: RunningRelay | null = null;
  let browser: Browser | null = null;
  let root = '';
  const roots: string[] = [];

  after(async () => {
    await browser?.close();
    await relay?.stop();
    for (const dir of roots) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('records 40 s into 15 s files that add up, each finished, seekable and decodable; serves them with Range, as cuts across files, and Chromium plays and seeks one', async () => {
    roots.push((root = tempDir('files')));
    const dir = path.join(root, 'live');
    relay = await startRelay(['--record', root, '--record-segment', '15', ...ENCODER_ARGS]);
    await waitForLog(relay, /recording into .*\.webm/);
    const startedAt = Date.now();

    // The file being written is readable from its start at any moment.
    await sleep(4000);
    const first = (await listed(relay))[0];
    expect(first.recording).to.equal(true);
    const growing = await fetch(`${relay.url}${first.url}`);
    expect(growing.status).to.equal(200);
    expect(growing.headers.get('cache-control')).to.equal('no-cache');
    const growingBytes = Buffer.from(await growing.arrayBuffer());
    expect(growingBytes.length).to.be.greaterThan(50_000);
    expect(ffmpegErrors(growingBytes), 'the file being written decodes').to.deep.equal([]);

    // Names are looked up, never joined into a path.
    for (const bad of ['..%2F..%2Fetc%2Fpasswd', '%2e%2e', 'x.webm', `..%2Flive%2F${first.file}`]) {
      expect((await fetch(`${relay.url}/recordings/live/${bad}`)).status, bad).to.equal(404);
    }
    expect((await fetch(`${relay.url}/recordings/nosuch/${first.file}`)).status).to.equal(404);

    await sleep(startedAt + 40_000 - Date.now());
    const beforeStop = await listed(relay);
    expect(beforeStop.map((r) => r.recording)).to.deep.equal([true, false, false]);
    // Stopping finishes the file being written.
    expect(await relay.stop()).to.equal(0);
    const stoppedAt = Date.now();
    const files = recordingFiles(dir);
    expect(files).to.have.length(3);
    const facts = files.map(inspect);
    for (const f of facts) {
      expect(f.finished, f.file).to.equal(true);
      expect(f.cuePoints, `${f.file}: cue points`).to.be.greaterThan(4);
      expect(f.mkvinfoHasDuration, `${f.file}: Duration`).to.equal(true);
      expect(f.decodeErrors, f.file).to.deep.equal([]);
      expect(Math.abs(f.probedDuration - f.duration!), `${f.file}: ffprobe against Duration`).to.be.lessThan(0.1);
    }
    const durations = facts.map((f) => f.duration!);
    const sum = durations.reduce((a, b) => a + b, 0);
    // The recorded time, from the first file's start to the last file's end, by the files' own clocks.
    const last = facts[2];
    const span = (last.startMs! + last.duration! * 1000 - facts[0].startMs!) / 1000;
    console.log(`      files: ${durations.map((d) => d.toFixed(3)).join(' + ')} = ${sum.toFixed(3)} s; recorded span ${span.toFixed(3)} s; relay ran ${((stoppedAt - startedAt) / 1000).toFixed(1)} s after the first file began`);
    // A new file at the first keyframe after 15 s: a file holds at least 15 s and no
    // keyframe from 15 s on. (Not "15 s plus one GOP": the encoder counts its keyframe
    // interval in frames, so on a busy machine that drops frames its GOPs run longer.)
    for (const f of facts.slice(0, 2)) {
      expect(f.duration!, `${f.file}: duration`).to.be.at.least(15);
      expect(f.cueTimes, `${f.file}: cue times`).to.have.length(f.cuePoints);
      expect(Math.max(...f.cueTimes), `${f.file}: its last keyframe`).to.be.below(15);
      expect(f.duration!, `${f.file}: duration`).to.be.below(15 + 6 * GOP_S);
    }
    expect(Math.abs(sum - span)).to.be.lessThan(GOP_S);
    // One clock for the whole stream: each file starts where the one before it ended.
    for (let i = 1; i < facts.length; i++) {
      const gap = facts[i].startMs! - (facts[i - 1].startMs! + facts[i - 1].duration! * 1000);
      expect(gap, `${facts[i].file}: ms from the end of the file before`).to.be.within(-2, 2);
    }
    expect(sum).to.be.within(40 - GOP_S, (stoppedAt - startedAt) / 1000 + GOP_S);

    // The files are served by a relay that records nothing (its producer never comes), so that
    // the checks below, however long a busy machine makes them, add no file.
    relay = await startRelay(['--record', root, '--ingest', `tcp://127.0.0.1:${await freePort()}`]);
    expect((await listed(relay)).map((r) => r.file).sort()).to.deep.equal(beforeStop.map((r) => r.file).sort());

    // A finished file: Range, ETag, caching.
    const finished = (await listed(relay))[2];
    const whole = await fetch(`${relay.url}${finished.url}`);
    const etag = whole.headers.get('etag');
    expect(whole.headers.get('accept-ranges')).to.equal('bytes');
    expect(whole.headers.get('cache-control')).to.match(/public, max-age=\d+/);
    expect(etag).to.match(/^".+"$/);
    const wholeBytes = Buffer.from(await whole.arrayBuffer());
    expect(wholeBytes.length).to.equal(finished.bytes);
    const part = await fetch(`${relay.url}${finished.url}`, { headers: { Range: 'bytes=1000-1999' } });
    expect(part.status).to.equal(206);
    expect(part.headers.get('content-range')).to.equal(`bytes 1000-1999/${finished.bytes}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(wholeBytes.subarray(1000, 2000))).to.equal(true);
    const tailPart = await fetch(`${relay.url}${finished.url}`, { headers: { Range: 'bytes=-100' } });
    expect(Buffer.from(await tailPart.arrayBuffer()).equals(wholeBytes.subarray(-100))).to.equal(true);
    expect((await fetch(`${relay.url}${finished.url}`, { headers: { Range: `bytes=${finished.bytes}-` } })).status).to.equal(416);
    expect((await fetch(`${relay.url}${finished.url}`, { headers: { 'If-None-Match': etag! } })).status).to.equal(304);

    // from/to filter the list.
    const boundary = beforeStop[1].start;
    // A second either side: the files' clocks (wall time at their first keyframe) may leave a few ms between them.
    const aroundFrom = new Date(Date.parse(boundary) - 1000).toISOString();
    const aroundTo = new Date(Date.parse(boundary) + 1000).toISOString();
    const around = await listed(relay, `?from=${aroundFrom}&to=${aroundTo}`);
    expect(around.map((r) => r.file).sort()).to.deep.equal([beforeStop[1].file, beforeStop[2].file].sort());
    expect((await fetch(`${relay.url}/api/recordings/live?from=yesterday`)).status).to.equal(400);

    // One file for 10 s across the boundary between the first two files.
    const boundaryMs = Date.parse(boundary);
    const from = new Date(boundaryMs - 5000).toISOString();
    const to = new Date(boundaryMs + 5000).toISOString();
    const cutResponse = await fetch(`${relay.url}/recordings/live/range.webm?from=${from}&to=${to}`);
    expect(cutResponse.status).to.equal(200);
    const cutBytes = Buffer.from(await cutResponse.arrayBuffer());
    expect(cutBytes.length).to.equal(Number(cutResponse.headers.get('content-length')));
    const cutFile = path.join(root, 'cut.webm');
    fs.writeFileSync(cutFile, cutBytes);
    const cutFacts = inspect(cutFile);
    // From the keyframe at or before `from` to the one at or after `to`: at most a GOP more
    // on each side, a GOP as long as the files' keyframes say (a busy machine's run longer).
    const gop = Math.max(...facts.flatMap((f) => [...f.cueTimes, f.duration!].slice(1).map((t, i) => t - f.cueTimes[i])));
    console.log(`      range.webm across a file boundary: ${cutFacts.duration?.toFixed(3)} s (asked 10 s, longest GOP ${gop.toFixed(3)} s), ${cutBytes.length} bytes, ${cutFacts.cuePoints} cue points`);
    expect(cutFacts.decodeErrors).to.deep.equal([]);
    expect(cutFacts.finished).to.equal(true);
    expect(cutFacts.duration).to.be.within(10 - 0.05, 10 + 2 * gop + 0.05);
    expect(cutFacts.probedDuration).to.be.within(10 - 0.05, 10 + 2 * gop + 0.1);
    expect(cutFacts.cuePoints).to.be.greaterThan(10);

    // Chromium: the page lists the files; one plays, seeks to 50 % and plays from there.
    browser = await launchBrowser();
    const page = await browser.newPage();
    await page.goto(`${relay.url}/live/recordings/`);
    const links = await page.$$eval('a.recording', (as) => as.map((a) => a.textContent ?? ''));
    expect(links.length).to.equal(3);
    await page.click(`a.recording[href$="${finished.file}"]`);
    await page.waitForFunction(() => {
      const v = document.querySelector('video')!;
      return v.readyState >= 2 && v.currentTime > 0.2;
    }, undefined, { timeout: 15_000 });
    const seek = await page.evaluate(async () => {
      const v = document.querySelector('video')!;
      const target = v.duration / 2;
      const t0 = performance.now();
      v.currentTime = target;
      await new Promise((resolve) => v.addEventListener('seeked', resolve, { once: true }));
      const seekedMs = performance.now() - t0;
      while (v.currentTime < target + 0.2 && performance.now() - t0 < 10_000) await new Promise((r) => setTimeout(r, 20));
      return { duration: v.duration, target, seekedMs, playingMs: performance.now() - t0, currentTime: v.currentTime, paused: v.paused, error: v.error?.message ?? null };
    });
    console.log(`      Chromium: duration ${seek.duration.toFixed(2)} s; seek to ${seek.target.toFixed(2)} s done in ${seek.seekedMs.toFixed(0)} ms, playing past it in ${seek.playingMs.toFixed(0)} ms`);
    expect(seek.error).to.equal(null);
    expect(seek.duration).to.be.within(14.5, 15 + 2 * GOP_S);
    expect(seek.paused).to.equal(false);
    expect(seek.currentTime).to.be.within(seek.target + 0.2, seek.target + 2);
    // 0.2 s of playing past the target is itself 200 ms: "within a second" leaves 800 ms for the seek.
    expect(seek.playingMs, 'from the seek to playing 0.2 s past it').to.be.lessThan(1200);
    await relay.stop();
    relay = null;
  });

  it('recordings need the stream\'s read credentials, and the links they give carry them', async () => {
    roots.push((root = tempDir('access')));
    const token = 'recordings-read-token-1234';
    relay = await startRelay(['--record', root, '--read', 'token', '--read-token', token, ...ENCODER_ARGS]);
    await waitForLog(relay, /recording into/);
    await sleep(1500);
    expect((await fetch(`${relay.url}/api/recordings/live`)).status).to.equal(401);
    expect((await fetch(`${relay.url}/api/recordings/live?token=wrong-token-wrong-token`)).status).to.equal(403);
    expect((await fetch(`${relay.url}/live/recordings/`)).status).to.equal(401);
    const list = await listed(relay, `?token=${token}`);
    expect(list).to.have.length(1);
    expect(list[0].url).to.match(new RegExp(`\\?token=${token}$`));
    const file = `${relay.url}/recordings/live/${list[0].file}`;
    expect((await fetch(file)).status).to.equal(401);
    expect((await fetch(`${relay.url}${list[0].url}`)).status).to.equal(200);
    expect((await fetch(`${relay.url}/recordings/live/range.webm`)).status).to.equal(401);
    await relay.stop();
    relay = null;
  });
});
