/**
 * A real varnishd for a test: the repository's VCL pointed at the test's relay, its own
 * working directory and free port, in the foreground (-F), without the jail (-j none,
 * the tests run as root), in its own process group so that killing it kills its
 * child (the cache process) too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { ROOT, freePort, waitFor } from '../helpers/relay.js';

export const VCL_PATH = path.join(ROOT, 'deploy/varnish/webm-relay.vcl');

export interface Varnish {
  port: number;
  url: string;
  process: ChildProcess;
  log(): string;
  /** SIGKILL to varnishd and its cache process; resolves once the port is closed. */
  kill(): Promise<void>;
  /** Stops it and removes its working directory. */
  stop(): Promise<void>;
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export async function startVarnish(backendPort: number, options: { port?: number; storage?: string; threads?: number } = {}): Promise<Varnish> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'webm-relay-varnish-'));
  const vcl = readFileSync(VCL_PATH, 'utf8').replace(/\.port = "\d+";/, `.port = "${backendPort}";`);
  if (!vcl.includes(`.port = "${backendPort}";`)) throw new Error('cannot point the VCL at the test relay');
  const vclFile = path.join(dir, 'webm-relay.vcl');
  writeFileSync(vclFile, vcl);
  const port = options.port ?? (await freePort());
  const child = spawn(
    'varnishd',
    [
      '-j', 'none', '-n', path.join(dir, 'work'), '-F', '-a', `127.0.0.1:${port}`, '-T', 'none', '-f', vclFile, '-s', options.storage ?? 'malloc,64m',
      // Each client being sent a streamed segment holds a worker thread. Threads made in
      // advance, not on demand: on a loaded machine Varnish creates them too slowly, its
      // queue fills and it drops new connections.
      '-p', `thread_pool_min=${options.threads ?? 300}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  let log = '';
  child.stdout!.setEncoding('utf8').on('data', (t: string) => (log += t));
  child.stderr!.setEncoding('utf8').on('data', (t: string) => (log += t));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let dead = false;
  child.once('exit', () => (dead = true));
  await waitFor(`varnishd on port ${port}`, async () => {
    if (dead) throw new Error(`varnishd exited:\n${log}`);
    return portOpen(port);
  }, 30_000);
  const kill = async () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
    await exited;
    await waitFor('varnish port closed', async () => !(await portOpen(port)), 10_000);
  };
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    process: child,
    log: () => log,
    kill,
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
