#!/usr/bin/env node
// `npm test`: every test folder under dist/test, run as separate mocha processes, the
// longest first. Nearly every folder runs browsers and encoders whose timing the tests
// assert on: such a folder gets two cores to itself (one at a time on this project's
// two-core machines), since two of them at once on two cores measured the machine, not
// the player. The folders in LIGHT kept the machine under half busy on average
// (sampled over a whole run: proxies 28 %, record 33 %, reliability 33 %, segments 44 %
// of two cores, against 70-76 % for quality, engines, browser and streams), so two of
// them share two cores. Each folder's output is printed whole when it ends, never
// interleaved; the last line totals them all.
//
//   npm test                      every folder
//   npm test -- relay streams     only these folders
//   TEST_JOBS=2 npm test          two folders at a time, whatever they run
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DIST = path.join(ROOT, 'dist/test');
/** Rough wall times in this order, longest first; folders not listed go last. */
const LONGEST_FIRST = ['quality', 'engines', 'proxies', 'record', 'browser', 'publish', 'reliability', 'segments', 'streams', 'relay', 'webm'];
/** Folders that need one core, not two: they mostly wait on the clock (recordings, proxies, timeouts) or run no browser. */
const LIGHT = new Set(['proxies', 'record', 'reliability', 'segments', 'webm', 'config', 'hub', 'normalizer', 'server']);

const wanted = process.argv.slice(2);
const folders = fs
  .readdirSync(DIST, { withFileTypes: true })
  .filter((e) => e.isDirectory() && e.name !== 'helpers')
  .map((e) => e.name)
  .filter((name) => fs.readdirSync(path.join(DIST, name), { recursive: true }).some((f) => String(f).endsWith('.test.js')))
  .filter((name) => wanted.length === 0 || wanted.includes(name))
  .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
for (const name of wanted) if (!folders.includes(name)) console.error(`test: no test folder dist/test/${name}`);
if (folders.length === 0 || folders.length < wanted.length) process.exit(2);

function rank(name) {
  const at = LONGEST_FIRST.indexOf(name);
  return at < 0 ? LONGEST_FIRST.length : at;
}

/** Cores the folders share, and what each takes: with TEST_JOBS, that many folders at a time. */
const fixedJobs = process.env.TEST_JOBS === undefined ? null : Math.max(1, Number(process.env.TEST_JOBS) || 1);
const cores = fixedJobs ?? Math.max(2, os.availableParallelism());
const coresOf = (name) => (fixedJobs !== null ? 1 : LIGHT.has(name) ? 1 : 2);
const totals = { passed: 0, failed: 0, skipped: 0 };
const failedFolders = [];
/** Mocha's "N failing" report of each failed folder, printed again at the very end so a truncated log still names them. */
const failureReports = [];
const started = Date.now();
const mocha = path.join(ROOT, 'node_modules/mocha/bin/mocha.js');

function runFolder(name) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [mocha, `dist/test/${name}/**/*.test.js`], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => (output += d));
    child.stderr.on('data', (d) => (output += d));
    child.on('close', (code, signal) => {
      const seconds = ((Date.now() - t0) / 1000).toFixed(0);
      const last = /tests: (\d+) passed, (\d+) failed, (\d+) skipped\s*$/.exec(output);
      process.stdout.write(`\n===== ${name} (${seconds} s, exit ${code ?? signal}) =====\n${output.replace(/^tests: .*\n?$/m, '')}`);
      if (last) {
        totals.passed += Number(last[1]);
        totals.failed += Number(last[2]);
        totals.skipped += Number(last[3]);
      }
      if (code !== 0 || !last) {
        failedFolders.push(name);
        const failing = output.search(/^ *\d+ failing/m);
        failureReports.push(`----- ${name} -----\n${failing >= 0 ? output.slice(failing).replace(/^tests: .*\n?$/m, '') : output.slice(-3000)}`);
        if (!last) totals.failed++;
      }
      resolve();
    });
  });
}

// In order, each as soon as its cores are free: the next folder waits for room rather
// than being overtaken, so the longest still start first.
let free = cores;
const running = new Set();
for (const name of folders) {
  const need = coresOf(name);
  while (free < need) await Promise.race(running);
  free -= need;
  const run = runFolder(name).then(() => {
    free += need;
    running.delete(run);
  });
  running.add(run);
}
await Promise.all(running);
const minutes = ((Date.now() - started) / 60000).toFixed(1);
if (failedFolders.length > 0) console.log(`\n===== failures, again =====\n${failureReports.join('\n')}\nfailed in: ${failedFolders.join(', ')}`);
console.log(`\n${folders.length} folders, ${fixedJobs !== null ? `${fixedJobs} at a time` : `light ones two at a time on ${cores} cores`}, ${minutes} min`);
console.log(`tests: ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exit(failedFolders.length > 0 ? 1 : 0);
