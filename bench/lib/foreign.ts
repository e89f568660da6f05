import { execFile } from 'node:child_process';
import { startedGroups } from './proc.ts';

/**
 * Watches for node processes that are not the bench's own while it runs (another
 * engineer's tests or experiments on the same 2 cores would distort the timings).
 * Samples `ps` every few seconds; the bench, its parents and its children's process
 * groups are left out.
 */
export interface ForeignSampler {
  /** distinct command lines seen, with the number of samples each was seen in */
  stop(): { samples: number; seen: { command: string; samples: number }[] };
}

export function watchForeignProcesses(everyMs = 3_000): ForeignSampler {
  const own = new Set<number>([process.pid, process.ppid]);
  const seen = new Map<string, number>();
  let samples = 0;
  let busy = false;
  const sample = () => {
    if (busy) return;
    busy = true;
    execFile('ps', ['-eo', 'pid=,ppid=,pgid=,stat=,args='], { timeout: 5_000, maxBuffer: 8 * 1024 * 1024 }, (err, stdout) => {
      busy = false;
      if (err !== null) return;
      samples++;
      const rows = stdout.split('\n').map((l) => l.trim().split(/\s+/));
      // the shells/npm above the bench: walk up from our parent
      const parent = new Map(rows.map((r) => [Number(r[0]), Number(r[1])]));
      let p = process.ppid;
      for (let i = 0; i < 5 && p > 1; i++) {
        own.add(p);
        p = parent.get(p) ?? 0;
      }
      const here = new Set<string>();
      for (const r of rows) {
        const [pid, , pgid, stat, ...args] = r;
        if (pid === undefined || stat === undefined || stat.startsWith('Z')) continue;
        const command = args.join(' ');
        if (!/(^|\/)node(\s|$)/.test(args[0] ?? '') && !/^(npm|npx|tsc|tsx|esbuild)\b/.test(args[0] ?? '')) continue;
        if (own.has(Number(pid)) || startedGroups.has(Number(pgid))) continue;
        here.add(command.slice(0, 160));
      }
      for (const c of here) seen.set(c, (seen.get(c) ?? 0) + 1);
    });
  };
  sample();
  const timer = setInterval(sample, everyMs);
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      return { samples, seen: [...seen.entries()].map(([command, n]) => ({ command, samples: n })).sort((a, b) => b.samples - a.samples) };
    },
  };
}
