/** The library: embed post-scheduler in an existing server. */
export { runCycle, type CycleOptions } from './dispatcher/cycle.ts';
export { initScheduler, type Scheduler, type SchedulerOptions } from './cron/init-scheduler.ts';
export { loadConfig, ConfigError, type Config } from './config.ts';
export { openStore } from './store/open.ts';
export type { Store } from './store/store.ts';
export { workerCount } from './scaling.ts';
export {
  PermanentPublishError,
  RetryablePublishError,
  type Publisher,
  type PublisherModule,
  type PublishRequest,
  type PublishResult,
} from './publishers/publisher.ts';
export * from './types.ts';
export * from './operations/index.ts';
export type { ChannelRemoval, PostAttempt, PostListItem } from './store/store.ts';
export type { Logger } from './log.ts';
