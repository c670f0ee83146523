import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * A disk that writes as slowly as a test says, for real: an ext4 file system on a loop
 * device, mounted `sync` (every write reaches the device before write() returns, as when
 * the page cache is full), and a block I/O cgroup that throttles the writes of the
 * processes put in it to that device (cgroup v1 `blkio.throttle.write_bps_device`, or
 * v2 `io.max`). Needs root, like the tests that mount a tmpfs.
 */
export interface SlowDisk {
  /** Where the file system is mounted. */
  dir: string;
  /** Puts a process (all its threads) under the throttle. */
  add(pid: number): void;
  /** Bytes per second the processes in it may write to the disk; null: as fast as it goes. */
  limit(bytesPerSecond: number | null): void;
  /** Unmounts, frees the loop device and the cgroup. */
  remove(): void;
}

const V1 = '/sys/fs/cgroup/blkio';
const V2 = '/sys/fs/cgroup';

export function slowDisk(base: string, sizeMb = 64): SlowDisk {
  const image = path.join(base, 'disk.img');
  const dir = path.join(base, 'mnt');
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('truncate', ['-s', `${sizeMb}M`, image]);
  execFileSync('mkfs.ext4', ['-q', '-F', image]);
  const loop = execFileSync('losetup', ['-f', '--show', image], { encoding: 'utf8' }).trim();
  const device = execFileSync('lsblk', ['-dno', 'MAJ:MIN', loop], { encoding: 'utf8' }).trim();
  execFileSync('mount', ['-o', 'sync', loop, dir]);
  const name = `webm-relay-slow-disk-${process.pid}-${path.basename(base)}`;
  const v1 = fs.existsSync(path.join(V1, 'blkio.throttle.write_bps_device'));
  let group: string;
  if (v1) {
    group = path.join(V1, name);
  } else {
    if (!fs.readFileSync(path.join(V2, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('io')) throw new Error('slowDisk: neither cgroup v1 blkio nor the v2 io controller is available');
    fs.writeFileSync(path.join(V2, 'cgroup.subtree_control'), '+io');
    group = path.join(V2, name);
  }
  fs.mkdirSync(group);
  const limit = (bytesPerSecond: number | null) => {
    if (v1) fs.writeFileSync(path.join(group, 'blkio.throttle.write_bps_device'), `${device} ${bytesPerSecond ?? 0}`);
    else fs.writeFileSync(path.join(group, 'io.max'), `${device} wbps=${bytesPerSecond ?? 'max'}`);
  };
  return {
    dir,
    add: (pid) => fs.writeFileSync(path.join(group, 'cgroup.procs'), String(pid)),
    limit,
    remove: () => {
      try {
        limit(null);
      } catch {
        // the group may be gone already
      }
      spawnSync('umount', ['-l', dir]);
      spawnSync('losetup', ['-d', loop]);
      // Empty once its processes have exited.
      for (let i = 0; i < 50 && fs.existsSync(group); i++) {
        try {
          fs.rmdirSync(group);
        } catch {
          spawnSync('sleep', ['0.1']);
        }
      }
    },
  };
}
