import fs from 'node:fs';
import os from 'node:os';
import { randomBytes } from 'node:crypto';

/**
 * Who holds a coordination row (a cycle lock or a worker slot): a random id per store
 * connection, and the machine and pid it runs as, so that a row whose process died
 * on this very machine is free at once instead of at its expiry.
 */
export interface Holder {
  readonly id: string;
  readonly machine: string;
  readonly pid: number;
}

/**
 * This machine: its host name and the kernel's boot id. Two containers sharing a host
 * name on one kernel, or a host name reused after a reboot, are not taken for each other.
 */
function machineId(): string {
  let boot = '';
  try {
    boot = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    // not Linux: the host name alone
  }
  return `${os.hostname()}:${boot}`;
}

export const MACHINE = machineId();

export function makeHolder(): Holder {
  return { id: `${process.pid}:${randomBytes(6).toString('hex')}`, machine: MACHINE, pid: process.pid };
}

/** Whether a process with this pid runs on this machine. */
export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as { code?: unknown }).code === 'EPERM';
  }
}

/** A row held by a process of this machine that no longer runs: free at once. */
export function holderDead(row: { machine: string; pid: number }): boolean {
  return row.machine === MACHINE && !processRuns(row.pid);
}
