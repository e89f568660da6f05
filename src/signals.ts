/**
 * SIGTERM / SIGINT for the entry points: the first signal calls `first` (stop
 * gracefully), the second `second` (stop now), a third exits with code 1.
 */
export function onSignals(first: () => void, second: () => void = () => process.exit(1)): void {
  let count = 0;
  const handler = () => {
    count++;
    if (count === 1) first();
    else if (count === 2) second();
    else process.exit(1);
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
