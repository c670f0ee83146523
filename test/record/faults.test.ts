import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import net from 'node:net';
import { gstWebm } from '../helpers/media.js';
import { capture, ffmpegErrors, freePort, sleep, spawnRelay, startRelay, trimToCompleteBlocks, waitFor, type RunningRelay } from '../helpers/relay.js';
import { slowDisk, type SlowDisk } from '../helpers/slow-disk.js';
import { ENCODER_ARGS, GOP_S, childPids, count, inspect, recordingFiles, tempDir, waitForLog } from './common.js';

async function segmentCount(relay: RunningRelay): Promise<number> {
  const index = (await (await fetch(`${relay.url}/live/index.json`)).json()) as { partial: { seq: number } };
  return index.partial.seq;
}

describe('Recording: crashes, retention and a failing disk', function () {
  this.timeout(120_000);
  const relays: RunningRelay[] = [];
  const roots: string[] = [];
  const mounts: string[] = [];
  const disks: SlowDisk[] = [];

  afterEach(async () => {
    // A relay that stops finishes its file: not at 8 kB/s.
    for (const d of disks) d.limit(null);
    await Promise.all(relays.splice(0).map((r) => r.stop()));
    for (const d of disks.splice(0)) d.remove();
    for (const m of mounts.splice(0)) spawnSync('umount', ['-l', m]);
    for (const r of roots.splice(0)) fs.rmSync(r, { recursive: true, force: true });
  });

  const root = (label: string) => {
    const dir = tempDir(label);
    roots.push(dir);
    return dir;
  };

  it('a relay killed with SIGKILL finishes the file on its next start, playable to within a cluster of the kill', async () => {
    const dir = root('kill');
    const first = spawnRelay(['--record', dir, ...ENCODER_ARGS]);
    try {
      const started = await waitForLog(first, /recording into (\S+\.webm)/);
      const file = started[1];
      const fileStart = Date.now();
      await sleep(6000);
      const encoders = childPids(first.process.pid!);
      first.process.kill('SIGKILL');
      const killedAfter = (Date.now() - fileStart) / 1000;
      await first.exited;
      // The relay's encoder loses its connection and ends; make sure of it.
      for (const pid of encoders) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      const before = inspect(file);
      expect(before.finished, 'unfinished after the kill').to.equal(false);
      expect(before.cuePoints).to.equal(0);

      const second = await startRelay(['--record', dir, ...ENCODER_ARGS]);
      relays.push(second);
      const line = await waitForLog(second, /finished the unfinished recording (\S+): (\d+) clusters, ([\d.]+) s/);
      expect(path.join(dir, 'live', line[1])).to.equal(file);
      const after = inspect(file);
      console.log(`      killed ${killedAfter.toFixed(2)} s into the file; finished on restart: ${after.duration?.toFixed(3)} s, ${after.cuePoints} cue points`);
      expect(after.finished).to.equal(true);
      expect(after.mkvinfoHasDuration).to.equal(true);
      expect(after.cuePoints).to.be.greaterThan(5);
      expect(after.decodeErrors).to.deep.equal([]);
      expect(Math.abs(after.probedDuration - after.duration!)).to.be.lessThan(0.1);
      // Lost: the cluster being gathered at the kill (one GOP), and the time the file began before our clock did.
      expect(after.duration).to.be.within(killedAfter - GOP_S - 0.5, killedAfter + 0.1);
      // The new run records into a new file of its own.
      await waitForLog(second, /recording into (\S+\.webm)/);
      expect(recordingFiles(path.join(dir, 'live')).length).to.equal(2);
    } finally {
      if (first.process.exitCode === null && first.process.signalCode === null) first.process.kill('SIGKILL');
    }
  });

  it('retention deletes the oldest files by age (record-keep) and by bytes (record-max-bytes), and logs each', async () => {
    const byAge = root('keep');
    const byBytes = root('bytes');
    const [age, bytes] = await Promise.all([
      startRelay(['--record', byAge, '--record-segment', '2', '--record-keep', '4', ...ENCODER_ARGS]),
      startRelay(['--record', byBytes, '--record-segment', '2', '--record-max-bytes', '1M', '--video-bitrate', '2000', ...ENCODER_ARGS]),
    ]);
    relays.push(age, bytes);
    await Promise.all([
      waitForLog(age, /deleted recording \S+ \(\d+ bytes, ended \d+ s ago\): older than record-keep \(4 s\)/, 30_000),
      waitForLog(bytes, /deleted recording \S+ \(\d+ bytes, ended \d+ s ago\): recordings over record-max-bytes \(1048576 bytes\)/, 30_000),
    ]);
    await sleep(3000);
    const ageFiles = recordingFiles(path.join(byAge, 'live'));
    const now = Date.now();
    // Each file kept ended less than record-keep ago, give or take a file being finished and the check's period.
    for (const f of ageFiles.slice(0, -1)) expect((now - fs.statSync(f).mtimeMs) / 1000, f).to.be.lessThan(4 + 2 + 1);
    expect(ageFiles.length).to.be.within(1, 5);
    const total = recordingFiles(path.join(byBytes, 'live')).reduce((n, f) => n + fs.statSync(f).size, 0);
    const deletedBytes = count(bytes.log(), /deleted recording/);
    console.log(`      by age: ${ageFiles.length} files kept, ${count(age.log(), /deleted recording/)} deleted; by bytes: ${total} bytes kept, ${deletedBytes} deleted`);
    // Kept under the limit, give or take the file being written (about 2 s at 2 Mbit/s).
    expect(total).to.be.lessThan((1 << 20) + 800_000);
    expect(deletedBytes).to.be.greaterThan(0);
  });

  const fullDisks = [
    {
      title: 'a full disk (tmpfs) ends the file and is logged once, viewers keep decoding, and recording resumes when space returns',
      args: ['--record-segment', '3', ...ENCODER_ARGS],
    },
    {
      // Each file then holds one keyframe: a file counts as working once the disk took it whole.
      title: 'the same with a GOP longer than --record-segment (one keyframe a file)',
      args: ['--record-segment', '1', ...ENCODER_ARGS.map((arg, i) => (ENCODER_ARGS[i - 1] === '--keyframe-interval' ? '2' : arg))],
    },
  ];
  for (const { title, args } of fullDisks) it(title, async function () {
    if (process.getuid?.() !== 0) this.skip();
    const dir = root('full');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir]);
    mounts.push(dir);
    const relay = await startRelay(['--record', dir, '--video-bitrate', '2000', ...args]);
    relays.push(relay);
    await waitForLog(relay, /recording into/);
    const viewer = capture(`${relay.url}/live.webm`, 20_000);
    const stopped = await waitForLog(relay, /recording stopped: (.*ENOSPC.*|.*short write.*)\. Viewers are not affected/, 30_000);
    console.log(`      log: ${stopped[0].slice(0, 160)}`);
    // Still full for a while: logged once, not once per keyframe; the stats and metrics say so.
    await sleep(3000);
    expect(count(relay.log(), /recording stopped/)).to.equal(1);
    // The room that cutting the failed file's partial cluster gives back is not space returning.
    expect(count(relay.log(), /recording resumed/)).to.equal(0);
    const stats = (await (await fetch(`${relay.url}/api/streams/live`)).json()) as { recording: { failing: string | null; failures: number } };
    expect(stats.recording.failures).to.be.greaterThan(0);
    const metrics = await (await fetch(`${relay.url}/metrics`)).text();
    expect(Number(/^webm_relay_recording_failures_total\{stream="live"\} (\d+)$/m.exec(metrics)?.[1])).to.be.greaterThan(0);
    // Space comes back.
    for (const f of recordingFiles(path.join(dir, 'live'))) fs.unlinkSync(f);
    const resumed = await waitForLog(relay, /recording resumed into (\S+) after a gap of ([\d.]+) s/, 15_000);
    console.log(`      ${resumed[0]}`);
    await sleep(2000);
    const seen = await viewer;
    expect(seen.status).to.equal(200);
    const watched = trimToCompleteBlocks(seen.body);
    expect(watched.length).to.be.greaterThan(2_000_000);
    expect(ffmpegErrors(watched), 'the viewer\'s capture decodes').to.deep.equal([]);
    expect(relay.log()).to.not.match(/viewer .*(disconnect|skip)/i);
    // The file written since decodes.
    await relay.stop();
    relays.length = 0;
    const files = recordingFiles(path.join(dir, 'live'));
    expect(files.length).to.be.greaterThan(0);
    for (const f of files) expect(inspect(f).decodeErrors, f).to.deep.equal([]);
  });

  it('a disk too slow for the stream overflows the write queue (--record-queue): logged once, the file ends, the next starts once writing keeps up; viewers see nothing of it', async function () {
    if (process.getuid?.() !== 0) {
      console.log('      skipped: a throttled loop device needs root');
      this.skip();
    }
    const disk = slowDisk(root('slow'));
    disks.push(disk);
    // About 19 KB of media a cluster at 300 kbit/s with a keyframe every 0.5 s; 128 KiB waiting is some 3 s.
    const relay = await startRelay(['--record', disk.dir, '--record-queue', '128K', '--video-bitrate', '300', ...ENCODER_ARGS]);
    relays.push(relay);
    await waitForLog(relay, /recording into/);
    const viewer = capture(`${relay.url}/live.webm`, 24_000);
    const segmentsBefore = await segmentCount(relay);
    await sleep(3000);
    // The disk now takes 8 KB/s from the relay: less than a quarter of the stream.
    disk.add(relay.process.pid!);
    disk.limit(8_000);
    const slowSince = Date.now();
    const stopped = await waitForLog(relay, /recording stopped: the disk is too slow: (\d+) bytes waiting to be written \(limit 131072\)\. Viewers are not affected/, 20_000);
    console.log(`      after ${((Date.now() - slowSince) / 1000).toFixed(1)} s of a slow disk: ${stopped[0].slice(0, 150)}`);
    // Still slow for a while: new files are tried at keyframes and overflow again, logged once.
    await sleep(5000);
    expect(count(relay.log(), /recording stopped/)).to.equal(1);
    disk.limit(null);
    const resumed = await waitForLog(relay, /recording resumed into (\S+) after a gap of ([\d.]+) s/, 20_000);
    console.log(`      ${resumed[0]}`);
    await sleep(3000);
    const seen = await viewer;
    const segmentsAfter = await segmentCount(relay);
    await relay.stop();
    relays.length = 0;
    expect(seen.status).to.equal(200);
    const watched = trimToCompleteBlocks(seen.body);
    // 24 s at 300 kbit/s and more (audio): the viewer got all of it.
    expect(watched.length).to.be.greaterThan(800_000);
    expect(ffmpegErrors(watched), "the viewer's capture decodes").to.deep.equal([]);
    expect(relay.log()).to.not.match(/viewer .*(disconnect|skip)/i);
    // The segments went on too: a keyframe every 0.5 s throughout.
    expect(segmentsAfter - segmentsBefore).to.be.greaterThan(30);
    const files = recordingFiles(path.join(disk.dir, 'live'));
    const facts = files.map(inspect);
    console.log(`      files: ${facts.map((f) => `${path.basename(f.file)} ${f.duration?.toFixed(1)} s`).join(', ')}; viewer ${watched.length} bytes`);
    expect(files.length).to.be.at.least(2);
    for (const f of facts) {
      expect(f.decodeErrors, f.file).to.deep.equal([]);
      expect(f.finished, f.file).to.equal(true);
    }
    expect(path.join(disk.dir, 'live', path.basename(files[files.length - 1]))).to.equal(resumed[1]);
  });

  it('an unwritable directory is logged once and viewers keep decoding', async () => {
    const base = root('unwritable');
    const notADirectory = path.join(base, 'file');
    fs.writeFileSync(notADirectory, 'a regular file where a directory should be\n');
    const relay = await startRelay(['--record', path.join(notADirectory, 'recordings'), ...ENCODER_ARGS]);
    relays.push(relay);
    const viewer = capture(`${relay.url}/live.webm`, 8000);
    const stopped = await waitForLog(relay, /recording stopped: cannot create .*ENOTDIR/);
    console.log(`      log: ${stopped[0].slice(0, 160)}`);
    const seen = await viewer;
    expect(count(relay.log(), /recording stopped/)).to.equal(1);
    // It kept trying at keyframes, quietly.
    expect(count(relay.log(), /recording still failing/)).to.be.greaterThan(0);
    const watched = trimToCompleteBlocks(seen.body);
    expect(watched.length).to.be.greaterThan(100_000);
    expect(ffmpegErrors(watched)).to.deep.equal([]);
    await waitFor('the relay to serve', async () => (await fetch(`${relay.url}/api/recordings/live`)).status === 200);
  });

  it('a producer with other tracks starts a new file, even within the same second', async () => {
    const dir = root('tracks');
    const port = await freePort();
    const relay = await startRelay(['--ingest', `tcp://127.0.0.1:${port}`, '--record', dir]);
    relays.push(relay);
    const send = async (bytes: Buffer) => {
      const socket = net.connect(port, '127.0.0.1');
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      await new Promise<void>((resolve) => socket.end(bytes, resolve));
      await waitForLog(relay, new RegExp(`producer (ended|disconnected) after ${bytes.length} bytes`));
    };
    await send(gstWebm({ seconds: 3, width: 320, height: 240 }).bytes);
    await send(gstWebm({ seconds: 3, width: 640, height: 360 }).bytes);
    await waitFor('both files finished', () => count(relay.log(), /recording \S+ finished/) === 2);
    const files = recordingFiles(path.join(dir, 'live'));
    expect(files).to.have.length(2);
    const sizes = files.map((f) => execFileSync('ffprobe', ['-v', 'error', '-select_streams', 'v', '-show_entries', 'stream=width,height', '-of', 'csv=p=0', f], { encoding: 'utf8' }).trim());
    expect(sizes.sort()).to.deep.equal(['320,240', '640,360']);
    for (const f of files) {
      const facts = inspect(f);
      expect(facts.finished, f).to.equal(true);
      expect(facts.decodeErrors, f).to.deep.equal([]);
      expect(facts.duration, f).to.be.within(2.5, 3.2);
    }
  });
});
