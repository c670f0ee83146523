import { parseArgs } from 'node:util';
import { loadConfigFile } from './config/file.js';
import { ConfigError, checkStreamName, checkToken, envName } from './config/options.js';
import { signedQuery } from './server/auth.js';

export const SIGN_USAGE = `Usage: webm-relay sign NAME [--ttl 1h] [--config FILE | --sign-key KEY] [--base URL]

Prints links to stream NAME that work until the time to live passes: its player page,
then its plain stream (for a <video> tag). The key is the stream's sign-key from the
config file, or --sign-key (env ${envName('sign-key')}).
  --ttl DURATION   how long the links work: 90s, 30m, 1h, 7d (default: 1h)
  --base URL       the relay's address as viewers reach it (default: http://localhost:PORT)`;

/** "90", "90s", "30m", "1h", "7d" in seconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+)\s*([smhd]?)$/.exec(text.trim());
  if (!match || Number(match[1]) === 0) throw new ConfigError(`--ttl must be a duration like 90s, 30m, 1h or 7d, got "${text}"`);
  return Number(match[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[match[2] as '' | 's' | 'm' | 'h' | 'd'];
}

/** `webm-relay sign ...`: the lines to print. Throws ConfigError for the user. */
export function signLinks(argv: string[], env: NodeJS.ProcessEnv = process.env, nowMs = Date.now()): string[] {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: { ttl: { type: 'string' }, config: { type: 'string' }, 'sign-key': { type: 'string' }, base: { type: 'string' }, port: { type: 'string' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new ConfigError(`${(error as Error).message}\n${SIGN_USAGE}`);
  }
  const [name, ...rest] = parsed.positionals;
  if (!name || rest.length > 0) throw new ConfigError(`name one stream\n${SIGN_USAGE}`);
  checkStreamName('sign', name);
  const ttl = parseDuration(parsed.values.ttl ?? '1h');
  let key = parsed.values['sign-key'] ?? env[envName('sign-key')] ?? null;
  let port = parsed.values.port ?? env[envName('port')] ?? '9001';
  const file = parsed.values.config ?? env[envName('config')];
  if (file && !parsed.values['sign-key']) {
    const config = loadConfigFile(file);
    const stream = config.streams.find((s) => s.name === name);
    if (!stream) throw new ConfigError(`${file} names no stream "${name}" (it has ${config.streams.map((s) => s.name).join(', ')})`);
    if (!stream.access.signKey) throw new ConfigError(`${file}: stream "${name}" has no sign-key`);
    if (stream.access.read !== 'signed') process.stderr.write(`webm-relay sign: note: stream "${name}" is read: ${stream.access.read}, so it does not ask for the signature\n`);
    key = stream.access.signKey;
    port = String(config.port);
  }
  if (!key) throw new ConfigError(`no key: give --config FILE (the stream's sign-key) or --sign-key KEY\n${SIGN_USAGE}`);
  checkToken('the sign-key', key);
  const base = (parsed.values.base ?? `http://localhost:${port}`).replace(/\/+$/, '');
  const query = signedQuery(name, ttl, key, nowMs);
  return [`${base}/${name}/?${query}`, `${base}/${name}.webm?${query}`];
}
