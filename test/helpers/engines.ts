/**
 * The three browser engines behind one small interface: open a page, evaluate a
 * function in it, close. Chromium through playwright-core, Firefox ESR through
 * puppeteer-core over WebDriver BiDi (no geckodriver), WebKitGTK's MiniBrowser through
 * WebKitWebDriver (plain W3C WebDriver over HTTP) under an Xvfb display of its own.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launchBrowser } from './browser.js';
import { freePort } from './relay.js';

export type EngineName = 'chromium' | 'firefox' | 'webkit';
export const ENGINES: EngineName[] = ['chromium', 'firefox', 'webkit'];

export const FIREFOX = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';
export const MINIBROWSER = process.env.MINIBROWSER_PATH ?? '/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser';

/**
 * The page stopped answering: its browser's web process hung or crashed. WebKitGTK 2.50's
 * web process deadlocks now and then as a page starts a video (MSE or a plain `<video
 * src>`): its main thread waits in `gst_element_send_event` on a GStreamer streaming
 * thread that waits on the main thread. No script runs in the page again, so no player
 * can notice or recover; a test may start over with a fresh browser (see
 * `retryOnceIfHung` in test/engines/common.ts).
 */
export class EngineHungError extends Error {
  override name = 'EngineHungError';
}

/** A `.catch` handler for a page call that may fail now and then: `fallback` instead, unless the page hung. */
export const unlessHung =
  <T>(fallback: T) =>
  (error: unknown): T => {
    if (error instanceof EngineHungError) throw error;
    return fallback;
  };

export interface EnginePage {
  goto(url: string): Promise<void>;
  /** Runs `fn(arg)` in the page (it may return a promise) and returns its JSON-serialisable result. */
  evaluate<T, A = undefined>(fn: (arg: A) => T | Promise<T>, arg?: A): Promise<T>;
  close(): Promise<void>;
  /** Requests that failed, with the browser's reason, where the driver reports them (Chromium). */
  failedRequests?(): string[];
}

export interface Engine {
  name: EngineName;
  /** Browser name and version, for reports. */
  version: string;
  newPage(): Promise<EnginePage>;
  close(): Promise<void>;
}

export async function launchEngine(name: EngineName): Promise<Engine> {
  switch (name) {
    case 'chromium':
      return launchChromium();
    case 'firefox':
      return launchFirefox();
    case 'webkit':
      return launchWebKit();
  }
}

async function launchChromium(): Promise<Engine> {
  const browser = await launchBrowser();
  return {
    name: 'chromium',
    version: `Chromium ${browser.version()}`,
    async newPage() {
      const page = await browser.newPage();
      const failed: string[] = [];
      page.on('requestfailed', (request) => void failed.push(`${request.url()}: ${request.failure()?.errorText ?? '?'}`));
      return {
        failedRequests: () => [...failed],
        goto: async (url) => void (await page.goto(url, { waitUntil: 'commit' })),
        evaluate: <T, A>(fn: (arg: A) => T | Promise<T>, arg?: A) => page.evaluate(fn as never, arg as never) as Promise<T>,
        close: () => page.close(),
      };
    },
    close: () => browser.close(),
  };
}

async function launchFirefox(): Promise<Engine> {
  const puppeteer = (await import('puppeteer-core')).default;
  const profile = mkdtempSync(path.join(os.tmpdir(), 'webm-relay-firefox-'));
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    userDataDir: profile,
    timeout: 60_000,
    extraPrefsFirefox: {
      // Autoplay with sound, as the Chromium flag does; the player starts muted anyway.
      'media.autoplay.default': 0,
      'media.autoplay.blocking_policy': 0,
      // No update checks, telemetry or other traffic beyond the test's own.
      'app.update.enabled': false,
      'network.captive-portal-service.enabled': false,
    },
  });
  const version = await browser.version();
  return {
    name: 'firefox',
    version: version.replace(/^firefox\//i, 'Firefox '),
    async newPage() {
      const page = await browser.newPage();
      return {
        goto: async (url) => void (await page.goto(url, { waitUntil: [] as never, timeout: 30_000 }).catch(() => undefined)),
        evaluate: <T, A>(fn: (arg: A) => T | Promise<T>, arg?: A) => page.evaluate(fn as never, arg as never) as Promise<T>,
        close: () => page.close(),
      };
    },
    async close() {
      await browser.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

// --- WebKitGTK over W3C WebDriver ------------------------------------------------

/** An Xvfb server on a display it picks itself (-displayfd), so parallel tests never collide. */
async function startXvfb(): Promise<{ display: string; process: ChildProcess }> {
  const xvfb = spawn('Xvfb', ['-displayfd', '3', '-screen', '0', '1280x720x24', '-nolisten', 'tcp'], { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  const display = await new Promise<string>((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error('Xvfb did not report a display')), 15_000);
    (xvfb.stdio[3] as NodeJS.ReadableStream).on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('\n')) {
        clearTimeout(timer);
        resolve(`:${text.trim()}`);
      }
    });
    xvfb.once('exit', (code) => reject(new Error(`Xvfb exited with ${code}`)));
  });
  return { display, process: xvfb };
}

/** A script's own time limit in the page; the driver's answer may take a little longer. */
const SCRIPT_TIMEOUT_MS = 60_000;

async function webdriver<T>(base: string, method: string, route: string, body?: unknown, timeoutMs = SCRIPT_TIMEOUT_MS + 5000): Promise<T> {
  let response: Response;
  try {
    response = await fetch(`${base}${route}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    // The driver answers a script that overran with an error of its own: no answer at all is the web process.
    if ((error as Error).name === 'TimeoutError' && route.includes('/execute/')) {
      throw new EngineHungError(`WebKit's page did not answer a script in ${timeoutMs} ms. ${describeWebProcesses()}`);
    }
    throw error;
  }
  const json = (await response.json()) as { value: T & { error?: string; message?: string } };
  if (!response.ok) {
    const message = `WebDriver ${method} ${route}: ${json.value?.error}: ${json.value?.message}`;
    if (/crash or hang/.test(json.value?.message ?? '')) throw new EngineHungError(`${message}. ${describeWebProcesses()}`);
    throw new Error(message);
  }
  return json.value;
}

/**
 * Each WebKit web process's CPU time and, where gdb is installed, where its main thread
 * waits (the named frames only: the packages carry no symbols for WebKit's own frames).
 */
function describeWebProcesses(): string {
  const ps = spawnSync('pgrep', ['-f', 'WebKitWebProcess'], { encoding: 'utf8' });
  const pids = ps.stdout.split('\n').filter(Boolean);
  const gdb = spawnSync('gdb', ['--version']).status === 0;
  const lines = pids.map((pid) => {
    const cpu = spawnSync('ps', ['-o', 'time=', '-p', pid], { encoding: 'utf8' }).stdout.trim();
    if (!gdb) return `web process ${pid}: CPU ${cpu}`;
    const bt = spawnSync('gdb', ['-p', pid, '-batch', '-ex', 'thread 1', '-ex', 'bt'], { encoding: 'utf8', timeout: 20_000 }).stdout ?? '';
    const frames = [...bt.matchAll(/^#\d+ +(?:0x[0-9a-f]+ in )?([A-Za-z_][\w:~<>]*) \(/gm)].map((m) => m[1]);
    const named = [...new Set(frames)].slice(0, 10);
    return `web process ${pid}: CPU ${cpu}, main thread in ${named.join(' < ') || '?'}`;
  });
  return lines.join('; ') || 'no WebKit web process';
}

/** The processes below `pid`, children before grandchildren. */
function descendants(pid: number): number[] {
  const table = spawnSync('ps', ['-eo', 'pid=,ppid='], { encoding: 'utf8' }).stdout.trim().split('\n').map((line) => line.trim().split(/\s+/).map(Number));
  const found: number[] = [];
  for (let parents = [pid]; parents.length > 0; ) {
    parents = table.filter(([, ppid]) => parents.includes(ppid)).map(([child]) => child);
    found.push(...parents);
  }
  return found;
}

/** A WebKitWebDriver on a free port; it holds one session (one MiniBrowser) at a time. */
async function startWebKitDriver(display: string): Promise<{ base: string; stop(): void }> {
  const port = await freePort();
  const driver = spawn('WebKitWebDriver', [`--port=${port}`, '--host=127.0.0.1'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, DISPLAY: display },
  });
  let driverLog = '';
  driver.stderr!.on('data', (chunk) => (driverLog = (driverLog + chunk).slice(-4000)));
  const base = `http://127.0.0.1:${port}`;
  // The browser and its web processes too: a hung web process outlives its browser otherwise.
  const stop = () => {
    for (const pid of descendants(driver.pid!)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    driver.kill('SIGKILL');
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      await webdriver(base, 'GET', '/status', undefined, 2000);
      return { base, stop };
    } catch (error) {
      if (Date.now() > deadline || driver.exitCode !== null) {
        stop();
        throw new Error(`WebKitWebDriver did not start: ${(error as Error).message} ${driverLog}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function launchWebKit(): Promise<Engine> {
  const xvfb = await startXvfb();
  const closers = new Set<() => Promise<void>>();
  let version = 'WebKitGTK';
  const probe = spawnSync('dpkg-query', ['-W', '-f=${Version}', 'libwebkit2gtk-4.1-0'], { encoding: 'utf8' });
  if (probe.status === 0) version = `WebKitGTK ${probe.stdout.trim()}`;

  return {
    name: 'webkit',
    get version() {
      return version;
    },
    async newPage() {
      // WebKitWebDriver serves one session at a time, and a session is one MiniBrowser window.
      const driver = await startWebKitDriver(xvfb.display);
      const base = driver.base;
      let session: { sessionId: string; capabilities: { browserVersion?: string } };
      try {
        session = await webdriver(base, 'POST', '/session', {
          capabilities: {
            alwaysMatch: {
              'webkitgtk:browserOptions': { binary: MINIBROWSER, args: ['--automation'] },
              // An endless video never finishes loading: navigation must not wait for it.
              pageLoadStrategy: 'none',
            },
          },
        });
      } catch (error) {
        driver.stop();
        throw error;
      }
      const route = `/session/${session.sessionId}`;
      if (session.capabilities.browserVersion) version = `WebKitGTK ${session.capabilities.browserVersion}`;
      const close = async () => {
        closers.delete(close);
        await webdriver(base, 'DELETE', route, undefined, 15_000).catch(() => undefined);
        driver.stop();
      };
      closers.add(close);
      await webdriver(base, 'POST', `${route}/timeouts`, { script: SCRIPT_TIMEOUT_MS });
      return {
        async goto(url) {
          await webdriver(base, 'POST', `${route}/url`, { url });
          // pageLoadStrategy none returns at once: wait for the document to exist.
          const deadline = Date.now() + 30_000;
          while (Date.now() < deadline) {
            const state = await webdriver<string>(base, 'POST', `${route}/execute/sync`, { script: 'return document.readyState + " " + location.href', args: [] }).catch(unlessHung(''));
            if (/^(interactive|complete) /.test(state) && state.includes(new URL(url).host)) return;
            await new Promise((r) => setTimeout(r, 100));
          }
          throw new Error(`WebKit: ${url} did not load`);
        },
        async evaluate<T, A>(fn: (arg: A) => T | Promise<T>, arg?: A): Promise<T> {
          const script = `const done = arguments[arguments.length - 1];
            Promise.resolve().then(() => (${fn.toString()})(arguments[0]))
              .then((value) => done({ value: value === undefined ? null : value }), (error) => done({ error: String(error && error.stack || error) }));`;
          const result = await webdriver<{ value?: T; error?: string }>(base, 'POST', `${route}/execute/async`, { script, args: [arg ?? null] });
          if (result.error) throw new Error(`in WebKit page: ${result.error}`);
          return result.value as T;
        },
        close,
      };
    },
    async close() {
      await Promise.all([...closers].map((close) => close()));
      xvfb.process.kill('SIGKILL');
    },
  };
}
