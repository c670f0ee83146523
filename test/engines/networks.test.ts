import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { launchEngine, type Engine, type EngineName, type EnginePage } from '../helpers/engines.js';
import { installQuality, readQuality, type PlaybackQuality } from '../helpers/quality.js';
import { getJson, sleep, startRelay, waitFor, type RunningRelay } from '../helpers/relay.js';
import { report, snapshot } from './common.js';
import type { PlayerSnapshot } from '../helpers/browser.js';

const PROXY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'delay-proxy.js');
const SECONDS = 45;

/**
 * A link of the test's own: a network namespace joined to this one by a veth pair. The
 * relay listens on this side's veth address; a delaying proxy inside the namespace
 * forwards to it, so media crosses the veth (shaped with tbf, the kernel has no netem)
 * and then the proxy (delay and jitter). The browsers, here, open the proxy's address.
 */
class ShapedLink {
  readonly name: string;
  readonly hostAddress: string;
  readonly nsAddress: string;
  private readonly hostIf: string;
  private proxy: ChildProcess | null = null;

  constructor() {
    const id = `${process.pid % 10000}${Math.floor(Math.random() * 1000)}`;
    this.name = `wr-${id}`;
    this.hostIf = `wrh${id}`.slice(0, 15);
    const a = 100 + Math.floor(Math.random() * 100);
    const b = Math.floor(Math.random() * 63) * 4;
    this.hostAddress = `10.${a}.${Math.floor(Math.random() * 250)}.${b + 1}`;
    this.nsAddress = this.hostAddress.replace(/\.\d+$/, `.${b + 2}`);
  }

  up(rateMbit: number): void {
    const nsIf = `wrn${this.name.slice(3)}`.slice(0, 15);
    const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });
    const inNs = (...args: string[]) => execFileSync('ip', ['netns', 'exec', this.name, ...args], { stdio: 'pipe' });
    ip('netns', 'add', this.name);
    ip('link', 'add', this.hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    ip('link', 'set', nsIf, 'netns', this.name);
    ip('addr', 'add', `${this.hostAddress}/30`, 'dev', this.hostIf);
    ip('link', 'set', this.hostIf, 'up');
    inNs('ip', 'addr', 'add', `${this.nsAddress}/30`, 'dev', nsIf);
    inNs('ip', 'link', 'set', nsIf, 'up');
    inNs('ip', 'link', 'set', 'lo', 'up');
    // Relay to viewer: this side's egress. A queue of at most 200 ms, as a real bottleneck has.
    execFileSync('tc', ['qdisc', 'add', 'dev', this.hostIf, 'root', 'tbf', 'rate', `${rateMbit}mbit`, 'burst', '32kb', 'latency', '200ms'], { stdio: 'pipe' });
  }

  async startProxy(targetPort: number, delayMs: number, jitterMs: number): Promise<number> {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const proxy = spawn('ip', ['netns', 'exec', this.name, process.execPath, PROXY, this.nsAddress, String(port), this.hostAddress, String(targetPort), String(delayMs), String(jitterMs)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.proxy = proxy;
    await new Promise<void>((resolve, reject) => {
      proxy.stdout!.once('data', () => resolve());
      proxy.once('exit', (code) => reject(new Error(`delay proxy exited with ${code}`)));
    });
    return port;
  }

  down(): void {
    this.proxy?.kill('SIGKILL');
    try {
      execFileSync('ip', ['netns', 'del', this.name], { stdio: 'pipe' });
    } catch {
      // Not created.
    }
    try {
      execFileSync('ip', ['link', 'del', this.hostIf], { stdio: 'pipe' });
    } catch {
      // Went with the namespace.
    }
  }
}

function canShape(): boolean {
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'pipe' });
    return process.getuid?.() === 0;
  } catch {
    return false;
  }
}

interface Profile {
  title: string;
  rateMbit: number;
  delayMs: number;
  jitterMs: number;
  relayArgs: string[];
  /** The link is slower than the stream: the relay must skip, the player must say so. */
  expectSkips: boolean;
}

const PROFILES: Profile[] = [
  { title: '40 ms ± 10 ms at 20 Mbit/s, 1 Mbit/s stream', rateMbit: 20, delayMs: 40, jitterMs: 10, relayArgs: [], expectSkips: false },
  {
    title: '80 ms ± 30 ms at 4 Mbit/s, 2 Mbit/s stream',
    rateMbit: 4, delayMs: 80, jitterMs: 30,
    relayArgs: ['--video-bitrate', '2000', '--video-source', 'videotestsrc is-live=true pattern=snow', '--width', '320', '--height', '240'],
    expectSkips: false,
  },
  {
    title: '2 Mbit/s for a 3 Mbit/s stream',
    rateMbit: 2, delayMs: 20, jitterMs: 5,
    // A per-viewer backlog of 512 KiB: about 1.5 s of this stream before the relay skips.
    relayArgs: ['--video-bitrate', '3000', '--video-source', 'videotestsrc is-live=true pattern=snow', '--width', '320', '--height', '240', '--max-queue', '512K'],
    expectSkips: true,
  },
];

const NETWORK_ENGINES: EngineName[] = ['chromium', 'firefox'];

describe('player over shaped links (network namespaces, tbf, a delaying proxy): Chromium and Firefox', function () {
  this.timeout(240_000);
  const engines: Engine[] = [];

  before(async function () {
    if (!canShape()) throw new Error('these tests need root and iproute2 (ip netns, tc) to make their own network namespace');
    for (const name of NETWORK_ENGINES) engines.push(await launchEngine(name));
  });

  after(async function () {
    await Promise.all(engines.map((e) => e.close()));
  });

  for (const profile of PROFILES) {
    it(profile.title, async function () {
      const link = new ShapedLink();
      let relay: RunningRelay | null = null;
      const pages: EnginePage[] = [];
      try {
        link.up(profile.rateMbit);
        relay = await startRelay(['--host', link.hostAddress, ...profile.relayArgs]);
        const direct = `http://${link.hostAddress}:${relay.port}`;
        await waitFor('the stream to be live', async () => (await fetch(`${direct}/healthz`).catch(() => null))?.status === 200, 20_000);
        const port = await link.startProxy(relay.port, profile.delayMs, profile.jitterMs);
        const url = `http://${link.nsAddress}:${port}/`;
        for (const engine of engines) {
          const page = await engine.newPage();
          pages.push(page);
          await page.goto(url);
          // Stalls and lag count from 5 s after the first frame.
          await installQuality(page, 5000);
        }
        // Whether the notice for skipped media was ever on screen.
        for (const page of pages) {
          await page.evaluate(() => {
            const w = window as unknown as { __skipNotices: number };
            w.__skipNotices = 0;
            const notice = document.getElementById('notice')!;
            new MutationObserver(() => {
              if (/^Skipped/.test(notice.textContent ?? '') && !notice.hidden) w.__skipNotices++;
            }).observe(notice, { childList: true, characterData: true, subtree: true, attributes: true });
          });
        }
        await sleep(SECONDS * 1000);
        const stats = await getJson(`${direct}/api/stats`).catch(() => ({}));
        for (const [i, page] of pages.entries()) {
          const q: PlaybackQuality = await readQuality(page);
          const s: PlayerSnapshot = await snapshot(page);
          const notices = await page.evaluate(() => (window as unknown as { __skipNotices: number }).__skipNotices);
          report(engines[i].name, engines[i].version, `network ${profile.title}, ${SECONDS} s`, q, {
            target: Number(s.targetLatency.toFixed(2)), skips: s.skips, skippedS: Number(s.skippedSeconds.toFixed(1)), notices, streamKbps: Math.round(s.bitrate / 1000),
          });
          const detail = `${engines[i].name}: ${JSON.stringify({ q, s, stats })}`;
          expect(q.error, detail).to.equal(null);
          expect(q.firstFrameMs, detail).to.not.equal(null);
          if (profile.expectSkips) {
            expect(s.skips, `${detail}: skips counted`).to.be.at.least(1);
            expect(notices, `${detail}: the skip notice shown`).to.be.at.least(1);
            expect(q.playedS, `${detail}: playback continues`).to.be.at.least(SECONDS * 0.5);
          } else {
            expect(q.stallsAfterSettle, `${detail}: stalls after the first 5 s`).to.be.at.most(1);
            expect(q.lagMedianS, detail).to.be.below(2);
            expect(q.playedS, detail).to.be.at.least(SECONDS * 0.75);
          }
        }
      } finally {
        for (const page of pages) await page.close().catch(() => {});
        await relay?.stop();
        link.down();
      }
    });
  }
});
