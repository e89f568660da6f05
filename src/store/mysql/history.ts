import type { HistoryStore } from '../concerns/history.ts';
import type { MysqlConnection } from './connection.ts';
import { notYet } from './todo.ts';

export function makeMysqlHistory(c: MysqlConnection): HistoryStore {
  return notYet(c, 'history');
}
