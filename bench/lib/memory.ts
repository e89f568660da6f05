import { spawn } from 'node:child_process';
import fs from 'node:fs';

/**
 * The memory a process group holds together, sampled while it runs: the peak of the
 * summed RSS and the peak of the summed PSS over its processes at the same instant.
 * RSS counts every page a process maps, so pages shared by several processes (the node
 * binary's code, shared libraries) are counted once per process; PSS divides each shared
 * page among the processes that map it, so a sum of PSS is what the group holds (Linux,
 * /proc/<pid>/smaps_rollup).
 */
export interface GroupMemory {
  /** the highest sum of RSS over the group's processes at one sample, MB */
  readonly peakRssMb: number;
  /** the highest sum of PSS over the group's processes at one sample, MB */
  readonly peakPssMb: number;
  /** the most processes seen at once */
  readonly peakProcesses: number;
  readonly samples: number;
}

/** The process ids of process group `pgid` now. */
function groupPids(pgid: number): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // fields after "(comm) ": state ppid pgrp ...
      const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      if (Number(fields[2]) === pgid) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

/** Summed RSS and PSS (kB) of processes `pids` now; null where /proc has no smaps_rollup. */
function sampleProcesses(pids: readonly number[]): { rssKb: number; pssKb: number; processes: number } | null {
  let rssKb = 0;
  let pssKb = 0;
  let processes = 0;
  for (const pid of pids) {
    let rollup: string;
    try {
      rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    } catch {
      // gone meanwhile, or not ours to read
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/m.exec(rollup);
    const pss = /^Pss:\s+(\d+) kB/m.exec(rollup);
    if (rss === null || pss === null) return null;
    rssKb += Number(rss[1]);
    pssKb += Number(pss[1]);
    processes++;
  }
  return { rssKb, pssKb, processes };
}

/** Summed RSS and PSS (kB) of the processes in process group `pgid` now; null where /proc has no smaps_rollup. */
function sampleGroup(pgid: number): { rssKb: number; pssKb: number; processes: number } | null {
  return sampleProcesses(groupPids(pgid));
}

/** Samples process group `pgid` every `intervalMs` until stop() (and once more then). */
export function watchGroupMemory(pgid: number, intervalMs = 50): { stop(): GroupMemory } {
  let peakRssKb = 0;
  let peakPssKb = 0;
  let peakProcesses = 0;
  let samples = 0;
  const sample = () => {
    const s = sampleGroup(pgid);
    if (s === null || s.processes === 0) return;
    samples++;
    peakRssKb = Math.max(peakRssKb, s.rssKb);
    peakPssKb = Math.max(peakPssKb, s.pssKb);
    peakProcesses = Math.max(peakProcesses, s.processes);
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return { peakRssMb: Math.round(peakRssKb / 1024), peakPssMb: Math.round(peakPssKb / 1024), peakProcesses, samples };
    },
  };
}

/**
 * The floor under a cycle's summed memory: `count` bare Node processes (`node -e`, idle
 * once started, in `env`: give it the one the bench gives the program's processes) sampled
 * together, the highest sums of `samples` samples. Each maps the node binary; RSS counts
 * its pages once per process, so no cycle of that many Node processes sums less RSS than
 * this, whatever its code does. Null where /proc has no smaps_rollup.
 */
export async function bareNodeMemory(count: number, env: NodeJS.ProcessEnv, samples = 5): Promise<{ readonly rssMb: number; readonly pssMb: number } | null> {
  const children = Array.from({ length: count }, () =>
    spawn(process.execPath, ['-e', "process.stdout.write('up'); setTimeout(() => {}, 20000)"], { env, stdio: ['ignore', 'pipe', 'ignore'] }),
  );
  try {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('a bare node process did not start within 10 s')), 10_000);
            child.stdout.once('data', () => {
              clearTimeout(timer);
              resolve();
            });
            child.once('error', (e) => {
              clearTimeout(timer);
              reject(e);
            });
          }),
      ),
    );
    let rssKb = 0;
    let pssKb = 0;
    for (let i = 0; i < samples; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const s = sampleProcesses(children.flatMap((c) => (c.pid === undefined ? [] : [c.pid])));
      if (s === null) return null;
      if (s.processes !== count) throw new Error(`${count - s.processes} of ${count} bare node processes exited before they were sampled`);
      rssKb = Math.max(rssKb, s.rssKb);
      pssKb = Math.max(pssKb, s.pssKb);
    }
    return { rssMb: Math.round(rssKb / 1024), pssMb: Math.round(pssKb / 1024) };
  } finally {
    for (const child of children) child.kill('SIGKILL');
  }
}
