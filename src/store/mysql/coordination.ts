import type { CoordinationStore } from '../concerns/coordination.ts';
import type { MysqlConnection } from './connection.ts';
import { notYet } from './todo.ts';

export function makeMysqlCoordination(c: MysqlConnection): CoordinationStore {
  return notYet(c, 'coordination');
}
