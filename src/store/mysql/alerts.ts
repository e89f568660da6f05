import type { AlertStore } from '../concerns/alerts.ts';
import type { MysqlConnection } from './connection.ts';
import { notYet } from './todo.ts';

export function makeMysqlAlerts(c: MysqlConnection): AlertStore {
  return notYet(c, 'alerts');
}
