/** One line per event on stderr: time, component, message. Quiet in tests via WEBM_RELAY_LOG=silent. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel | 'silent', number> = { debug: 0, info: 1, warn: 2, error: 3, silent: 4 };

const threshold = ORDER[(process.env.WEBM_RELAY_LOG as LogLevel) ?? 'info'] ?? ORDER.info;

export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export function logger(component: string): Logger {
  const write = (level: LogLevel) => (message: string) => {
    if (ORDER[level] < threshold) return;
    process.stderr.write(`${new Date().toISOString()} ${level.padEnd(5)} [${component}] ${message}\n`);
  };
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}
