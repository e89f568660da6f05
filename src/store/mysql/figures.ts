import type { FiguresStore } from '../concerns/figures.ts';
import type { MysqlConnection } from './connection.ts';
import { notYet } from './todo.ts';

export function makeMysqlFigures(c: MysqlConnection): FiguresStore {
  return notYet(c, 'figures');
}
