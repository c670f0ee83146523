#!/usr/bin/env node
import { helpText, parseConfig } from './config/flags.js';
import { ConfigError } from './config/options.js';
import { logger } from './log.js';
import { signLinks } from './sign.js';

const log = logger('relay');

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
