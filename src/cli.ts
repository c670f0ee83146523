#!/usr/bin/env node
import v8 from 'node:v8';
import { helpText, parseConfig } from './config/flags.js';
import { ConfigError } from './config/options.js';
import { logger } from './log.js';
import { signLinks } from './sign.js';

const log = logger('relay');

/**
 * How far V8 lets the old generation grow past what a full collection left, in percent.
 * Every media byte passes through a few Buffers (the socket read, the chunk all viewers
 * are sent, its framing for one transport, the segment window), and V8 counts Buffer memory not yet
 * reclaimed against the old generation's headroom. With its own heuristic that headroom
 * is about 8 MB on a relay: ten 2 Mbit/s streams allocate that in a second, and V8 ran a
 * full mark-compact every second (30-40 ms of CPU each, most of what ten streams cost
 * beyond one). With 300 % the limit is four times the live heap (about 80 MB with 1000
 * viewers), and full collections come every 10-20 s. An operator's own
 * `node --heap-growing-percent=N` wins.
 */
const HEAP_GROWING_PERCENT = 300;

async function main(): Promise<number> {
  if (process.argv[2] === 'sign') {
    try {
      process.stdout.write(`${signLinks(process.argv.slice(3)).join('\n')}\n`);
      return 0;
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      process.stderr.write(`webm-relay sign: ${error.message}\n`);
      return 2;
    }
  }
  let config;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`webm-relay: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  if (config === 'help') {
    process.stdout.write(`${helpText()}\n`);
    return 0;
  }

  if (!process.execArgv.some((arg) => /^--heap[-_]growing[-_]percent/.test(arg))) {
    // V8 reads this flag at every full collection, so setting it after start-up takes effect.
    v8.setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
  }

  // Loaded only to run: `sign` and `--help` start without express and the rest.
  const { Relay } = await import('./relay.js');
  const relay = new Relay(config);
  let stopping = false;
  const stop = async (why: string, code: number, drainMs = 0) => {
    if (stopping) return;
    stopping = true;
    log.info(`${why}: shutting down`);
    // Whatever happens, be gone within 2 s of the drain.
    setTimeout(() => process.exit(code), drainMs + 1800).unref();
    await relay.drain(drainMs);
    await relay.stop();
    process.exit(code);
  };
  process.on('SIGINT', () => void stop('SIGINT', 0));
  // SIGTERM is what service managers and orchestrators send: drain first. Ctrl-C is a person waiting.
  process.on('SIGTERM', () => void stop('SIGTERM', 0, config.drainMs));
  relay.fatal.then((message) => stop(`cannot go on (${message})`, 1));

  try {
    await relay.start();
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    const message = e.code === 'EADDRINUSE' ? `port ${config.port} is in use (choose another with --port)` : e.message;
    log.error(message);
    await relay.stop();
    return 1;
  }
  return -1;
}

main().then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (error) => {
    log.error((error as Error).stack ?? String(error));
    process.exit(1);
  },
);
