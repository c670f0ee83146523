/**
 * The relay published under a path prefix of a site (nginx `location /cam/`, the block
 * in deploy/nginx/webm-relay.conf uncommented): the plain <video> page and the
 * player page play in Chromium, every URL they use resolved under the prefix.
 */
import { expect } from 'chai';
import type { Browser } from 'playwright-core';
import { launchBrowser, playerSnapshot, sampleVideo } from '../helpers/browser.js';
import { startRelay, waitFor, waitLive, type RunningRelay } from '../helpers/relay.js';
import { shutdown } from '../helpers/viewers.js';
import { cleanUpProxies, startNginx, type RunningProxy } from './harness.js';

/** Uncomments the path-prefix block of the nginx site. */
function withPrefixLocation(site: string): string {
  const match = /# --- path prefix \(begin\) ---\n([\s\S]*?)\s*# --- path prefix \(end\) ---/.exec(site);
  if (!match) throw new Error('deploy/nginx/webm-relay.conf has no path prefix block');
  return site.replace(match[1], match[1].replace(/^(\s*)# ?/gm, '$1'));
}

describe('proxies: the relay under a path prefix (nginx location /cam/), in Chromium', function () {
  this.timeout(90_000);
  let relay: RunningRelay | null = null;
  let nginx: RunningProxy | null = null;
  let browser: Browser | null = null;

  before(async () => {
    relay = await startRelay(['--width', '320', '--height', '240', '--video-bitrate', '400']);
    await waitLive(relay, 20_000);
    nginx = await startNginx([relay.port], { editConfig: withPrefixLocation });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await nginx?.stop();
    await shutdown(relay);
    await cleanUpProxies();
  });

  it('/cam/video.html plays live.webm from /cam/, and /cam/live/ plays over the WebSocket at /cam/live', async () => {
    const page = await browser!.newPage();
    const requested: string[] = [];
    page.on('request', (r) => requested.push(new URL(r.url()).pathname));
    page.on('websocket', (ws) => requested.push(`ws ${new URL(ws.url()).pathname}`));
    const failed: string[] = [];
    page.on('response', (r) => {
      if (r.status() >= 400) failed.push(`${r.status()} ${new URL(r.url()).pathname}`);
    });

    await page.goto(`${nginx!.url}/cam/video.html`);
    await waitFor('the plain video to play 2 s', async () => (await sampleVideo(page)).currentTime > 2, 20_000);
    const plain = await sampleVideo(page);
    const snippet = await page.$eval('#snippet', (e) => e.textContent ?? '');

    await page.goto(`${nginx!.url}/cam/live/`);
    await waitFor('the player to play 2 s', async () => (await playerSnapshot(page).catch(() => null))?.currentTime! > 2, 20_000);
    const player = await playerSnapshot(page);
    await page.close();

    console.log(`      video.html: ${plain.videoWidth}x${plain.videoHeight}, ${plain.currentTime.toFixed(1)} s; player: ${player.state}, ${player.currentTime.toFixed(1)} s; requests: ${[...new Set(requested)].join(' ')}`);
    expect(plain.error).to.equal(null);
    expect(plain.videoWidth).to.equal(320);
    expect(snippet).to.include(`${nginx!.url}/cam/live.webm`);
    expect(player.mediaErrors).to.equal(0);
    expect(requested).to.include('/cam/live.webm');
    expect(requested).to.include('ws /cam/live');
    expect(requested.filter((p) => !/^(ws )?\/cam\//.test(p)), 'requests outside the prefix').to.deep.equal([]);
    expect(failed).to.deep.equal([]);
  });
});
