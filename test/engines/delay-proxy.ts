/**
 * A TCP proxy that delays every chunk by `delay ± jitter` ms in both directions, keeping
 * order (a chunk never overtakes the one before it), with backpressure: it holds at most
 * 64 KiB per direction, so a slow link still pushes back to the sender. The kernel here
 * has no netem; this stands in for its delay and jitter.
 *
 *   node delay-proxy.js LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS JITTER_MS
 *
 * Prints "listening" once it accepts connections.
 */
import net from 'node:net';

const HIGH_WATER = 64 * 1024;

function pipeDelayed(from: net.Socket, to: net.Socket, delayMs: number, jitterMs: number): void {
  // One FIFO and one timer for its head: chunks leave strictly in the order they came.
  const queue: { chunk: Buffer; at: number }[] = [];
  let queued = 0;
  let lastRelease = 0;
  let timer: NodeJS.Timeout | null = null;
  let ended = false;
  let waitingDrain = false;
  const release = () => {
    timer = null;
    const now = Date.now();
    while (queue.length > 0 && queue[0].at <= now) {
      const { chunk } = queue.shift()!;
      queued -= chunk.length;
      if (!to.write(chunk) && !waitingDrain) {
        waitingDrain = true;
        to.once('drain', () => {
          waitingDrain = false;
          if (queued < HIGH_WATER / 2) from.resume();
        });
      }
    }
    if (queue.length > 0) timer = setTimeout(release, queue[0].at - now);
    else if (ended) to.end();
    if (queued < HIGH_WATER / 2 && !waitingDrain) from.resume();
  };
  from.on('data', (chunk: Buffer) => {
    const at = Math.max(lastRelease, Date.now() + delayMs + (Math.random() * 2 - 1) * jitterMs);
    lastRelease = at;
    queue.push({ chunk, at });
    queued += chunk.length;
    if (queued > HIGH_WATER) from.pause();
    if (!timer) timer = setTimeout(release, at - Date.now());
  });
  from.on('end', () => {
    ended = true;
    if (!timer && queue.length === 0) to.end();
  });
  from.on('error', () => to.destroy());
}

export function startDelayProxy(listenHost: string, listenPort: number, targetHost: string, targetPort: number, delayMs: number, jitterMs: number): net.Server {
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    // From the listening address: the link's shaper tells viewers apart by it.
    const upstream = net.connect({ port: targetPort, host: targetHost, localAddress: listenHost });
    upstream.setNoDelay(true);
    pipeDelayed(client, upstream, delayMs, jitterMs);
    pipeDelayed(upstream, client, delayMs, jitterMs);
    // The browser gone: nothing more is owed to it. The relay gone: what is still held in
    // the delay queue for the browser is delivered first (pipeDelayed ends the client once
    // it is out). Destroying the client at the relay's 'close' cut off responses still
    // in the queue, now and then a script of the player page, which then never ran.
    client.on('close', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  server.listen(listenPort, listenHost, () => console.log('listening'));
  return server;
}

if (process.argv[1]?.endsWith('delay-proxy.js')) {
  const [host, port, targetHost, targetPort, delay, jitter] = process.argv.slice(2);
  startDelayProxy(host, Number(port), targetHost, Number(targetPort), Number(delay), Number(jitter));
}
