/**
 * The seed's formula: 0 workers when nothing is due, else
 * min(max(ceil(pending / BATCH_SIZE), MIN_WORKERS), MAX_WORKERS).
 */
export interface ScalingLimits {
  readonly batchSize: number;
  readonly minWorkers: number;
  readonly maxWorkers: number;
}

export function workerCount(pending: number, limits: ScalingLimits): number {
  if (pending <= 0) return 0;
  const wanted = Math.ceil(pending / limits.batchSize);
  return Math.min(Math.max(wanted, limits.minWorkers), limits.maxWorkers);
}
