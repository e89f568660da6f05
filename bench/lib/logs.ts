/**
 * Reading a cycle's LOG_FORMAT=json output: one JSON object a line,
 * {time, level, scope, msg, ...fields}. Worker lines come through the dispatcher's
 * stdout (workers inherit it), so one capture holds the whole cycle.
 */
export interface LogLine {
  readonly time: string;
  /** `time` as epoch ms */
  readonly t: number;
  readonly level: string;
  readonly scope: string;
  readonly msg: string;
  readonly fields: Readonly<Record<string, unknown>>;
}

export interface Summary {
  readonly pending: number;
  readonly workersSpawned: number;
  readonly durationMs: number;
  readonly exitCode: number;
  readonly published: number;
  readonly retried: number;
  readonly failed: number;
  readonly maxRssMb: number;
}

export interface WorkerLog {
  readonly id: string;
  /** the dispatcher's `Spawning worker: <id>` line */
  spawnedAt: number | null;
  /** the worker's first-claim line (`Processing N posts...` or `No due posts left to claim`) */
  firstClaimAt: number | null;
  firstClaimed: number | null;
  msSinceProcessStart: number | null;
  /** from the worker's last line */
  published: number | null;
  durationMs: number | null;
  maxRssMb: number | null;
  /** from the dispatcher's `Worker <id> completed/failed ...` line */
  exitCode: number | null;
}

export interface CycleLog {
  readonly summary: Summary | null;
  readonly workers: WorkerLog[];
  /** messages of warn and error lines */
  readonly warnings: string[];
  readonly unparsed: number;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export function parseLines(stdout: string): { lines: LogLine[]; unparsed: number } {
  const lines: LogLine[] = [];
  let unparsed = 0;
  for (const raw of stdout.split('\n')) {
    if (raw.trim() === '') continue;
    let o: unknown;
    try {
      o = JSON.parse(raw);
    } catch {
      unparsed++;
      continue;
    }
    if (typeof o !== 'object' || o === null) {
      unparsed++;
      continue;
    }
    const { time, level, scope, msg, ...fields } = o as Record<string, unknown>;
    if (typeof time !== 'string' || typeof scope !== 'string' || typeof msg !== 'string') {
      unparsed++;
      continue;
    }
    lines.push({ time, t: Date.parse(time), level: String(level), scope, msg, fields });
  }
  return { lines, unparsed };
}

export function parseCycle(stdout: string): CycleLog {
  const { lines, unparsed } = parseLines(stdout);
  const workers = new Map<string, WorkerLog>();
  const worker = (id: string): WorkerLog => {
    let w = workers.get(id);
    if (w === undefined) {
      w = { id, spawnedAt: null, firstClaimAt: null, firstClaimed: null, msSinceProcessStart: null, published: null, durationMs: null, maxRssMb: null, exitCode: null };
      workers.set(id, w);
    }
    return w;
  };
  let summary: Summary | null = null;
  const warnings: string[] = [];
  for (const l of lines) {
    if (l.level === 'warn' || l.level === 'error') warnings.push(`[${l.scope}] ${l.level}: ${l.msg}`);
    if (l.scope === 'DISPATCHER') {
      const spawned = /^Spawning worker: (\S+)$/.exec(l.msg);
      if (spawned?.[1] !== undefined) worker(spawned[1]).spawnedAt = l.t;
      const id = l.fields['workerId'];
      if (typeof id === 'string' && 'exitCode' in l.fields) worker(id).exitCode = num(l.fields['exitCode']);
      if (l.fields['summary'] === true) {
        const f = l.fields;
        summary = {
          pending: num(f['pending']) ?? -1,
          workersSpawned: num(f['workersSpawned']) ?? -1,
          durationMs: num(f['durationMs']) ?? -1,
          exitCode: num(f['exitCode']) ?? -1,
          published: num(f['published']) ?? -1,
          retried: num(f['retried']) ?? -1,
          failed: num(f['failed']) ?? -1,
          maxRssMb: num(f['maxRssMb']) ?? -1,
        };
      }
    } else if (l.scope.startsWith('WORKER ')) {
      const w = worker(l.scope.slice('WORKER '.length));
      if ('msSinceProcessStart' in l.fields && w.firstClaimAt === null) {
        w.firstClaimAt = l.t;
        w.msSinceProcessStart = num(l.fields['msSinceProcessStart']);
        w.firstClaimed = num(l.fields['claimed']);
      }
      if ('maxRssMb' in l.fields) {
        w.published = num(l.fields['published']);
        w.durationMs = num(l.fields['durationMs']);
        w.maxRssMb = num(l.fields['maxRssMb']);
      }
    }
  }
  return { summary, workers: [...workers.values()], warnings, unparsed };
}
