import type { RateStore } from '../concerns/rate.ts';
import type { MysqlConnection } from './connection.ts';
import { notYet } from './todo.ts';

export function makeMysqlRate(c: MysqlConnection): RateStore {
  return notYet(c, 'rate');
}
