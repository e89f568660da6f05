import type { QueueStore } from '../concerns/queue.ts';
import type { MysqlConnection } from './connection.ts';
import { notYet } from './todo.ts';

export function makeMysqlQueue(c: MysqlConnection): QueueStore {
  return notYet(c, 'queue');
}
