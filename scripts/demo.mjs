// `npm run demo`: the seed's scenario on the embedded default (SQLite at
// ./data/post-scheduler.db unless DATABASE_URL says otherwise): a demo channel that
// appends to ./data/demo-published.jsonl, 23 posts due now, one cron cycle, the status.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');

function run(args, { capture = false, allowFail = false } = {}) {
  const result = spawnSync(process.execPath, [cli, ...args], { stdio: capture ? ['ignore', 'pipe', 'inherit'] : 'inherit', encoding: 'utf8' });
  if (result.status !== 0 && !allowFail) {
    process.stderr.write(`demo: post-scheduler ${args[0]} exited with ${result.status}\n`);
    process.exit(result.status ?? 1);
  }
  return result;
}

const channels = JSON.parse(run(['channels', 'list', '--json'], { capture: true }).stdout);
if (!channels.some((c) => c.name === 'demo')) {
  run(['channels', 'add', '--name', 'demo', '--platform', 'file', '--path', path.join('data', 'demo-published.jsonl')]);
}
run(['simulate', '--posts', '23', '--channel', 'demo']);
console.log();
const cycle = run(['cron'], { allowFail: true });
console.log();
run(['status', '--cycles', '5']);
process.exit(cycle.status ?? 1);
