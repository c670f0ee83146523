import { expect } from 'chai';
import http from 'node:http';
import type { Browser, Page } from 'playwright-core';
import { WebSocket } from 'ws';
import type { StreamSummary } from '../../src/protocol.js';
import { launchBrowser, sampleVideo } from '../helpers/browser.js';
import { freePort, getJson, waitFor } from '../helpers/relay.js';
import { READ_TOKEN, SMALL_ENCODER, startWithConfig } from './helpers.js';

interface EmbedResults {
  snapshot?: number | string;
  /** The segments' index.json, read with fetch (CORS). */
  index?: number | string;
  wsMessage?: boolean;
  wsClose?: number;
}

/** A site on another origin: a page with the lines the relay's player page offers, and a script of its own that reads the stream. */
function embedPage(lines: { iframe: string; video: string }, relayUrl: string, name: string, query: string): string {
  const video = lines.video.replace('<video ', '<video id="plain" crossorigin="anonymous" ');
  return `<!doctype html><html><body>
${lines.iframe}
${video}
<script>
  window.results = {};
  fetch(${JSON.stringify(`${relayUrl}/${name}/snapshot.jpg${query}`)}).then((r) => (results.snapshot = r.status), () => (results.snapshot = 'refused'));
  fetch(${JSON.stringify(`${relayUrl}/${name}/index.json${query}`)}).then((r) => (results.index = r.status), () => (results.index = 'refused'));
  const ws = new WebSocket(${JSON.stringify(`${relayUrl.replace('http:', 'ws:')}/${name}${query}`)});
  ws.onmessage = () => (results.wsMessage = true);
  ws.onclose = (event) => (results.wsClose = event.code);
</script></body></html>`;
}

describe('publish: embedding on another site (allow-origins; Chromium, a second origin on another port)', function () {
  this.timeout(150_000);
  let relay: Awaited<ReturnType<typeof startWithConfig>>;
  let site: http.Server;
  let siteOrigin: string;
  let browser: Browser;
  const pages = new Map<string, string>();

  before(async () => {
    const port = await freePort();
    siteOrigin = `http://127.0.0.1:${port}`;
    site = http.createServer((req, res) => {
      const html = pages.get(req.url ?? '');
      res.writeHead(html ? 200 : 404, { 'Content-Type': 'text/html' }).end(html ?? 'not found');
    });
    await new Promise<void>((resolve) => site.listen(port, '127.0.0.1', resolve));
    relay = await startWithConfig(
      [
        'streams:',
        // Allowed on the site, and needs a token: the embed lines carry it.
        '  shared:',
        `    ${SMALL_ENCODER}`,
        '    read: token',
        `    read-token: ${READ_TOKEN}`,
        `    allow-origins: ${siteOrigin}`,
        // Allowed elsewhere only.
        '  elsewhere:',
        `    ${SMALL_ENCODER}`,
        '    allow-origins: https://school.example',
        // No list: the defaults.
        '  plain:',
        `    ${SMALL_ENCODER}`,
        '',
      ].join('\n'),
    );
    await waitFor('the streams to be live', async () => (await getJson<{ streams: StreamSummary[] }>(`${relay.url}/api/streams`)).streams.every((s) => s.live), 20_000);
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await relay?.stop();
    site?.close();
  });

  /** The embed lines the player page shows. */
  async function embedLines(page: Page, url: string): Promise<{ iframe: string; video: string }> {
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('embed-video')!.textContent !== '');
    return { iframe: (await page.textContent('#embed-iframe'))!, video: (await page.textContent('#embed-video'))! };
  }

  async function visit(name: string, query: string) {
    const page = await browser.newPage();
    const consoleLines: string[] = [];
    page.on('console', (m) => consoleLines.push(m.text()));
    const lines = await embedLines(page, `${relay.url}/${name}/${query}`);
    pages.set(`/${name}`, embedPage(lines, relay.url, name, query));
    await page.goto(`${siteOrigin}/${name}`);
    await page.waitForFunction(() => {
      const r = (window as unknown as { results: EmbedResults }).results;
      return r.snapshot !== undefined && r.index !== undefined && (r.wsMessage || r.wsClose !== undefined);
    }, null, { timeout: 40_000 });
    const results = await page.evaluate(() => (window as unknown as { results: EmbedResults }).results);
    return { page, lines, results, consoleLines };
  }

  const framedPlayer = (page: Page, name: string) => page.frames().find((f) => f.url().startsWith(`${relay.url}/${name}/`));

  it('an allowed site embeds the player (iframe) and the plain stream with the token in the lines; its own WebSocket and CORS reads work', async () => {
    const { page, lines, results } = await visit('shared', `?token=${READ_TOKEN}`);
    expect(lines.iframe).to.equal(`<iframe src="${relay.url}/shared/?token=${READ_TOKEN}" width="640" height="400" allow="autoplay; fullscreen" allowfullscreen style="border:0"></iframe>`);
    expect(lines.video).to.equal(`<video src="${relay.url}/shared.webm?token=${READ_TOKEN}" autoplay muted controls playsinline></video>`);
    expect(results).to.deep.include({ snapshot: 200, index: 200, wsMessage: true });

    const frame = framedPlayer(page, 'shared');
    expect(frame, 'the player frame').to.not.equal(undefined);
    await frame!.waitForFunction(() => (window as unknown as { player?: { state: string } }).player?.state === 'playing', null, { timeout: 45_000 });
    await page.waitForFunction(() => (document.getElementById('plain') as HTMLVideoElement).currentTime > 0.5, null, { timeout: 40_000 });
    // Its clock runs on (given time: the machine may be busy with other tests' encoders and browsers).
    const before = await sampleVideo(page, '#plain');
    await page.waitForFunction((t0) => (document.getElementById('plain') as HTMLVideoElement).currentTime > t0 + 1, before.currentTime, { timeout: 15_000 });
    const after = await sampleVideo(page, '#plain');
    expect(after.error).to.equal(null);
    expect(after.videoWidth).to.equal(320);
    const framed = await frame!.evaluate(() => document.querySelector('video')!.videoWidth);
    expect(framed).to.equal(320);

    const stream = await fetch(`${relay.url}/shared.webm?token=${READ_TOKEN}`, { headers: { Origin: siteOrigin } });
    expect(stream.headers.get('access-control-allow-origin')).to.equal(siteOrigin);
    expect(stream.headers.get('vary')).to.equal('Origin');
    await stream.body?.cancel();
    // The segments too: the index, the init segment and a segment, with the asking origin and Vary.
    const index = await fetch(`${relay.url}/shared/index.json?token=${READ_TOKEN}`, { headers: { Origin: siteOrigin } });
    const body = (await index.json()) as { init: string; partial: { url: string } };
    for (const [what, answer] of [
      ['index.json', index],
      ['init', await fetch(`${relay.url}/shared/${body.init}?token=${READ_TOKEN}`, { headers: { Origin: siteOrigin } })],
    ] as const) {
      expect(answer.headers.get('access-control-allow-origin'), what).to.equal(siteOrigin);
      expect(answer.headers.get('vary'), what).to.equal('Origin');
    }
    const player = await fetch(`${relay.url}/shared/?token=${READ_TOKEN}`);
    expect(player.headers.get('content-security-policy')).to.equal(`frame-ancestors 'self' ${siteOrigin}`);
    await page.close();
  });

  it('a site not on the list is refused: no frame, no CORS read, no WebSocket', async () => {
    const { page, results, consoleLines } = await visit('elsewhere', '');
    expect(results.snapshot).to.equal('refused');
    expect(results.index, 'no CORS read of the segments\' index').to.equal('refused');
    expect(results.wsMessage).to.equal(undefined);
    expect(results.wsClose).to.equal(1006);
    expect(consoleLines.join('\n')).to.match(/frame-ancestors/);
    const frame = framedPlayer(page, 'elsewhere');
    const playerInFrame = frame ? await frame.evaluate(() => typeof (window as unknown as { player?: unknown }).player).catch(() => 'no document') : 'no frame';
    expect(playerInFrame).to.not.equal('object');
    await page.waitForFunction(() => (document.getElementById('plain') as HTMLVideoElement).error !== null, null, { timeout: 10_000 });
    expect(relay.log()).to.match(new RegExp(`elsewhere: websocket from 127\\.0\\.0\\.1: refused, origin ${siteOrigin} is not in allow-origins`));
    const stream = await fetch(`${relay.url}/elsewhere.webm`, { headers: { Origin: siteOrigin } });
    expect(stream.headers.get('access-control-allow-origin')).to.equal(null);
    await stream.body?.cancel();
    await page.close();
  });

  it('without allow-origins: the plain stream and snapshot to any origin (CORS *), the WebSocket and the frame to the relay\'s own pages only', async () => {
    const { page, results, consoleLines } = await visit('plain', '');
    expect(results.snapshot).to.equal(200);
    expect(results.index).to.equal(200);
    expect(results.wsClose).to.equal(1006);
    expect(consoleLines.join('\n')).to.match(/frame-ancestors/);
    await page.waitForFunction(() => (document.getElementById('plain') as HTMLVideoElement).currentTime > 0.5, null, { timeout: 40_000 });
    await page.close();
    // The relay's own player page connects (same origin).
    const own = await browser.newPage();
    await own.goto(`${relay.url}/plain/`);
    await own.waitForFunction(() => (window as unknown as { player: { state: string } }).player.state === 'playing', null, { timeout: 40_000 });
    await own.close();
    // A client that is not a browser sends no Origin and is let in.
    const socket = new WebSocket(`${relay.url.replace('http:', 'ws:')}/plain`);
    const first = await new Promise<string>((resolve, reject) => {
      socket.once('message', (data) => resolve(String(data)));
      socket.once('error', reject);
    });
    socket.terminate();
    expect(JSON.parse(first).type).to.equal('stream');
  });
});
