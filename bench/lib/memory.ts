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

/** Summed RSS and PSS (kB) of the processes in process group `pgid` now; null where /proc has no smaps_rollup. */
function sampleGroup(pgid: number): { rssKb: number; pssKb: number; processes: number } | null {
  let rssKb = 0;
  let pssKb = 0;
  let processes = 0;
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    let rollup: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      // fields after "(comm) ": state ppid pgrp ...
      const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
      if (Number(fields[2]) !== pgid) continue;
      rollup = fs.readFileSync(`/proc/${entry}/smaps_rollup`, 'utf8');
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
