/**
 * Standard output and error that may be closed under us: `status | head -3`, or
 * `cron 2>&1 | head -1` in a crontab. Node reports a write to a closed pipe as an
 * `error` event (EPIPE), which kills the process with a stack trace when nobody
 * listens. guardOutput() listens, once per process: on EPIPE the stream is given up
 * (every later write to it is dropped), so a cycle never stops because its output
 * went away. Any other stream error is thrown as before.
 */
const guarded = new WeakSet<NodeJS.WriteStream>();

export function guardOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (guarded.has(stream)) continue;
    guarded.add(stream);
    let closed = false;
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (closed) return;
      if (e.code !== 'EPIPE') throw e;
      closed = true;
      dropWrites(stream);
    });
  }
}

/** Replaces the stream's write with one that drops the data and reports success. */
function dropWrites(stream: NodeJS.WriteStream): void {
  const drop = (...args: unknown[]): boolean => {
    const callback = args.find((a): a is () => void => typeof a === 'function');
    if (callback !== undefined) process.nextTick(callback);
    return true;
  };
  stream.write = drop;
}
