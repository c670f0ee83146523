import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { logger } from '../log.js';
import { diagnoseFatal } from './gst-args.js';

const log = logger('encoder');

export interface SupervisorOptions {
  command: string;
  args: string[];
  /** First restart delay; doubles while the pipeline keeps dying young. */
  minBackoffMs: number;
  maxBackoffMs: number;
  stderrLines: number;
  /** Names the encoder in log lines (the stream's name). */
  label: string;
}

export const DEFAULT_SUPERVISOR_OPTIONS: Omit<SupervisorOptions, 'command' | 'args'> = {
  minBackoffMs: 250,
  maxBackoffMs: 8000,
  stderrLines: 20,
  label: 'encoder',
};

/**
 * Keeps exactly one encoder process running: logs its stderr, restarts it when it
 * dies (at once if it had delivered a stream, else with a delay that doubles each
 * time it dies again without one), and stops for good on an error a restart cannot fix
 * (missing program or element). Events: 'spawn' (pid), 'exit' (description),
 * 'fatal' (message).
 */
export class Supervisor extends EventEmitter {
  readonly options: SupervisorOptions;
  private child: ChildProcess | null = null;
  private stopping = false;
  private backoff: number;
  private restartTimer: NodeJS.Timeout | null = null;
  private recentStderr: string[] = [];
  /** The running encoder has delivered a stream: if it dies now, restart at once. */
  private delivered = false;
  restarts = 0;

  constructor(options: Pick<SupervisorOptions, 'command' | 'args'> & Partial<SupervisorOptions>) {
    super();
    this.options = { ...DEFAULT_SUPERVISOR_OPTIONS, ...options };
    this.backoff = this.options.minBackoffMs;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Called when the running encoder's stream reached the relay. */
  markDelivered(): void {
    this.delivered = true;
    this.backoff = this.options.minBackoffMs;
  }

  start(): void {
    this.stopping = false;
    this.launch();
  }

  private launch(): void {
    this.restartTimer = null;
    const { command, args } = this.options;
    const startedAt = Date.now();
    this.recentStderr = [];
    this.delivered = false;
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    let spawnFailed = false;
    child.on('error', (error: NodeJS.ErrnoException) => {
      spawnFailed = true;
      const message =
        error.code === 'ENOENT'
          ? `${command} not found: install GStreamer (apt-get install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good)`
          : `cannot start ${command}: ${error.message}`;
      this.fatal(message);
    });
    child.on('spawn', () => {
      log.info(`${this.options.label}: started ${command} (pid ${child.pid})`);
      this.emit('spawn', child.pid);
    });
    let partial = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (text: string) => {
      const lines = (partial + text).split('\n');
      partial = lines.pop()!;
      for (const line of lines) this.stderrLine(line);
    });
    child.on('exit', (code, signal) => {
      if (partial) this.stderrLine(partial);
      if (this.child === child) this.child = null;
      if (spawnFailed) return;
      const ranMs = Date.now() - startedAt;
      const how = signal ? `killed by ${signal}` : `exited with code ${code}`;
      this.emit('exit', how);
      if (this.stopping) return;
      const fatal = diagnoseFatal(this.recentStderr.join('\n'));
      if (fatal) return this.fatal(fatal);
      const tail = this.recentStderr.slice(-5).join(' | ');
      log.warn(`${this.options.label}: ${command} ${how} after ${(ranMs / 1000).toFixed(1)} s; restarting in ${this.backoff} ms${tail ? `; last stderr: ${tail}` : ''}`);
      this.restarts++;
      this.restartTimer = setTimeout(() => this.launch(), this.backoff);
      if (!this.delivered) this.backoff = Math.min(this.backoff * 2, this.options.maxBackoffMs);
    });
  }

  private stderrLine(line: string): void {
    const text = line.trimEnd();
    if (!text) return;
    this.recentStderr.push(text);
    if (this.recentStderr.length > this.options.stderrLines) this.recentStderr.shift();
    log.debug(`${this.options.label}: gst: ${text}`);
  }

  private fatal(message: string): void {
    this.stopping = true;
    log.error(message);
    this.emit('fatal', message);
  }

  /** Stops the encoder: SIGINT lets gst-launch finish cleanly, SIGKILL follows if it lingers. */
  async stop(graceMs = 1000): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
}
