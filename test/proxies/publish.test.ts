/**
 * Publishing through a proxy: ffmpeg sends `PUT /live.webm` with the token, an endless
 * request body, through nginx and HAProxy (deploy/ configs); a viewer through the same
 * proxy gets the stream.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { startTcpRelay } from '../helpers/faults.js';
import { trimToCompleteBlocks, waitFor, type RunningRelay } from '../helpers/relay.js';
import { decodeErrors, shutdown, sleep } from '../helpers/viewers.js';
import { cleanUpProxies, startHaproxy, startNginx, TimedViewer, type RunningProxy } from './harness.js';

const TOKEN = 'proxy-test-token-0123456789';

function ffmpegPut(url: string): ChildProcess {
  return spawn('ffmpeg', [
    '-hide_banner', '-loglevel', 'error', '-nostdin',
    '-re', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=30',
    '-re', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000',
    '-c:v', 'libvpx', '-deadline', 'realtime', '-cpu-used', '8', '-b:v', '400k', '-g', '30',
    '-c:a', 'libopus', '-b:a', '48k',
    '-f', 'webm', '-live', '1', '-cluster_time_limit', '100',
    '-method', 'PUT', '-headers', `Authorization: Bearer ${TOKEN}\r\n`, url,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
}

describe('proxies: publishing with PUT /live.webm through nginx and HAProxy', function () {
  this.timeout(90_000);
  const relays: RunningRelay[] = [];
  const producers: ChildProcess[] = [];

  after(async () => {
    for (const p of producers) p.kill('SIGKILL');
    await Promise.all(relays.map((r) => shutdown(r)));
    await cleanUpProxies();
  });

  for (const kind of ['nginx', 'haproxy'] as const) {
    it(`${kind}: an endless PUT body reaches the relay, and a viewer through ${kind} plays it`, async () => {
      // A relay of its own: one that has waited out --producer-grace is not live again for a
      // producer with the same tracks (the hub drops its init segment; the stream does not resend it).
      const relay = (await startTcpRelay(['--ingest-token', TOKEN])).relay;
      relays.push(relay);
      const proxy: RunningProxy = kind === 'nginx' ? await startNginx([relay.port]) : await startHaproxy([relay.port]);
      const producer = ffmpegPut(`${proxy.url}/live.webm`);
      producers.push(producer);
      let stderr = '';
      producer.stderr!.on('data', (t: Buffer) => (stderr += t.toString()));
      await waitFor('the published stream to be live', async () => (await fetch(`${relay.url}/healthz`)).status === 200, 20_000).catch((error: Error) => {
        throw new Error(`${error.message}\nffmpeg: ${stderr}\n${kind}: ${proxy.output().slice(-2000)}\nrelay: ${relay.log().slice(-2000)}`);
      });
      // HAProxy takes the relay into service once its health check has passed twice (about 2 s).
      await waitFor(`${kind} to serve the stream`, async () => (await fetch(`${proxy.url}/healthz`)).status === 200, 10_000);
      const viewer = new TimedViewer(`${proxy.url}/live.webm`);
      await sleep(5000);
      viewer.stop();
      producer.kill('SIGINT');
      await new Promise((resolve) => producer.once('exit', resolve));
      await proxy.stop();
      const producerLine = relay.log().split('\n').filter((l) => /producer connected/.test(l)).pop() ?? '';
      console.log(`      ${kind}: viewer got ${viewer.body().length} bytes, ${viewer.arrivals.size} blocks; relay: "${producerLine.replace(/^\S+ \S+\s+/, '')}"; ffmpeg: ${stderr.trim() || 'no errors'}`);
      expect(producerLine).to.match(/http /);
      // ffmpeg encodes in real time only on an idle machine: what matters is that blocks flow.
      expect(viewer.arrivals.size, 'blocks through the proxy').to.be.greaterThan(5);
      expect(await decodeErrors(trimToCompleteBlocks(viewer.body())), 'ffmpeg -v error').to.deep.equal([]);
    });
  }
});
