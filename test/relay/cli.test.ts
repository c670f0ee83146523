/**
 * The command line as a user meets it: --help, refused values, SIGTERM, and
 * --max-viewers turning the next viewer away on both transports.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { OPTIONS } from '../../src/config/options.js';
import { HttpViewer, WsViewer, alive, gstChildren, waitStats } from '../helpers/faults.js';
import { CLI, capture, startRelay, waitLive, type RunningRelay } from '../helpers/relay.js';
import { shutdown, sleep } from '../helpers/viewers.js';

function runCli(args: string[], env: NodeJS.ProcessEnv = {}): { code: number | null; stdout: string; stderr: string; ms: number } {
  const t0 = Date.now();
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 10_000, env: { ...process.env, ...env } });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr, ms: Date.now() - t0 };
}

describe('relay: command line', function () {
  this.timeout(60_000);

  it('--help prints every option with its default, and exits 0', () => {
    const { code, stdout } = runCli(['--help']);
    expect(code).to.equal(0);
    expect(stdout).to.match(/^Usage: webm-relay \[options\]/);
    // The documented defaults, spelled out here (not read from the code under test).
    const documented: Record<string, string> = {
      port: '9001',
      host: '0.0.0.0',
      ingest: 'encoder',
      'video-codec': 'vp8',
      'audio-codec': 'opus',
      width: '640',
      height: '360',
      framerate: '30',
      'keyframe-interval': '1',
      join: 'latest-keyframe',
      'max-viewers': '1000',
      'max-queue': '4M',
      'stall-timeout': '10',
      'producer-grace': '30',
    };
    const lines = stdout.split('\n');
    const optionLine = (name: string) => lines.find((l) => l.trimStart().startsWith(`--${name} `));
    for (const [name, value] of Object.entries(documented)) {
      expect(optionLine(name), `--${name}`).to.be.a('string').that.includes(`(default: ${value})`);
    }
    for (const option of OPTIONS) {
      const line = optionLine(option.name);
      expect(line, `--${option.name} is listed`).to.be.a('string');
      if (option.default) expect(line, `--${option.name}`).to.include(`(default: ${option.default})`);
    }
    expect(stdout).to.match(/-h, --help/);
  });

  for (const [args, pattern] of [
    [['--port', 'abc'], /--port must be a whole number .*"abc"/],
    [['--video-codec', 'h264'], /--video-codec must be one of vp8, vp9, got "h264"/],
    [['--video-source', 'bad;rm'], /--video-source .*"bad;rm"/],
    [['--video-source', 'videotestsrc ; rm -rf /tmp/x'], /--video-source: unexpected characters in ";"/],
    [['--max-queue', 'lots'], /--max-queue must be a size/],
    [['--nonsense'], /Unknown option '--nonsense'/],
  ] as [string[], RegExp][]) {
    it(`${args.join(' ')}: exits with code 2 and says what is wrong, starting nothing`, () => {
      const { code, stdout, stderr, ms } = runCli(args);
      expect(code).to.equal(2);
      expect(stderr).to.match(/^webm-relay: /);
      expect(stderr).to.match(pattern);
      expect(stderr.split('\n').filter(Boolean).length, 'a short message, not a stack trace').to.be.at.most(2);
      expect(stderr).not.to.match(/\bat .*\.js:\d+/);
      expect(stdout).to.equal('');
      expect(ms).to.be.below(5000);
    });
  }

  it('a bad value from the environment (WEBM_RELAY_PORT=abc) is refused the same way', () => {
    const { code, stderr } = runCli([], { WEBM_RELAY_PORT: 'abc' });
    expect(code).to.equal(2);
    expect(stderr).to.match(/--port must be a whole number .*"abc"/);
  });

  describe('--max-viewers 2, then SIGTERM', () => {
    let relay: RunningRelay;
    const viewers: (HttpViewer | WsViewer)[] = [];

    before(async () => {
      relay = await startRelay(['--max-viewers', '2', '--width', '320', '--height', '240', '--video-bitrate', '300']);
      await waitLive(relay, 20_000);
    });

    after(async () => {
      for (const v of viewers) v.close();
      await shutdown(relay);
    });

    it('the 3rd HTTP viewer gets 503, and HEAD says 503 while full', async () => {
      viewers.push(new HttpViewer(`${relay.url}/live.webm`), new HttpViewer(`${relay.url}/live.webm`));
      await waitStats(relay.url, 'two viewers', (s) => s.viewers === 2, 5000);
      const third = await capture(`${relay.url}/live.webm`, 3000);
      expect(third.status).to.equal(503);
      expect(third.body.toString()).to.match(/too many viewers/);
      expect(third.headers['retry-after']).to.equal('10');
      expect((await fetch(`${relay.url}/live.webm`, { method: 'HEAD' })).status).to.equal(503);
      const stats = await waitStats(relay.url, 'stats', () => true);
      expect(stats.viewers).to.equal(2);
      expect(stats.rejected).to.be.at.least(1);
      // The two admitted viewers are still being served.
      const before = viewers.map((v) => (v as HttpViewer).bytes);
      await sleep(1000);
      viewers.forEach((v, i) => expect((v as HttpViewer).bytes, `viewer ${i}`).to.be.greaterThan(before[i]));
      for (const v of viewers.splice(0)) v.close();
      await waitStats(relay.url, 'no viewers', (s) => s.viewers === 0, 5000);
    });

    it('the 3rd WebSocket viewer is closed with 1013', async () => {
      const ws = [new WsViewer(`ws://127.0.0.1:${relay.port}/live`), new WsViewer(`ws://127.0.0.1:${relay.port}/live`)];
      viewers.push(...ws);
      await Promise.all(ws.map((w) => w.opened));
      await waitStats(relay.url, 'two WebSocket viewers', (s) => s.viewersByTransport.ws === 2, 5000);
      const third = new WsViewer(`ws://127.0.0.1:${relay.port}/live`);
      viewers.push(third);
      await Promise.race([third.closed, sleep(5000)]);
      expect(third.closeCode, 'close code of the 3rd').to.equal(1013);
      expect(third.binaryBytes, 'media sent to the 3rd').to.equal(0);
      expect(ws.map((w) => w.closeCode)).to.deep.equal([null, null]);
      // The two admitted ones got the stream description and media.
      for (const w of ws) {
        expect(w.streamMessages()[0]?.mimeType).to.equal('video/webm; codecs="vp8,opus"');
        expect(w.binaryBytes).to.be.greaterThan(0);
      }
    });

    it('SIGTERM: exits 0 within 2 s, leaving no gst-launch-1.0 behind', async () => {
      const pid = relay.process.pid!;
      const encoders = gstChildren(pid);
      expect(encoders).to.have.length(1);
      const t0 = Date.now();
      const code = await relay.stop('SIGTERM');
      const ms = Date.now() - t0;
      console.log(`      SIGTERM to exit: ${ms} ms; encoder ${encoders[0]} alive afterwards: ${alive(encoders[0])}`);
      expect(code).to.equal(0);
      expect(ms).to.be.below(2000);
      expect(alive(encoders[0]), `gst-launch-1.0 ${encoders[0]}`).to.equal(false);
    });
  });

  it('SIGTERM while viewers are connected and a producer is streaming (ffmpeg into --ingest -): exits 0 within 2 s', async () => {
    const relay = await startRelay(['--ingest', '-']);
    const ffmpeg = spawn(
      'ffmpeg',
      ['-hide_banner', '-nostdin', '-v', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=30', '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-g', '30', '-f', 'webm', '-live', '1', 'pipe:1'],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    ffmpeg.stdout.pipe(relay.process.stdin!);
    relay.process.stdin!.on('error', () => {});
    const viewer = new HttpViewer(`${relay.url}/live.webm`);
    try {
      await waitLive(relay, 15_000);
      await waitStats(relay.url, 'the viewer', (s) => s.viewers === 1, 5000);
      const t0 = Date.now();
      const code = await relay.stop('SIGTERM');
      const ms = Date.now() - t0;
      await Promise.race([viewer.done, sleep(2000)]);
      console.log(`      SIGTERM with a viewer and a producer: exit ${code} after ${ms} ms; viewer's response: ${viewer.outcome}`);
      expect(code).to.equal(0);
      expect(ms).to.be.below(2000);
      expect(viewer.outcome, 'the viewer sees its response end').to.not.equal('open');
    } finally {
      viewer.close();
      ffmpeg.kill('SIGKILL');
      await shutdown(relay);
    }
  });
});
