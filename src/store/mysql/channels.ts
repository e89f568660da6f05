import type { ChannelStore } from '../concerns/channels.ts';
import type { MysqlConnection } from './connection.ts';
import { notYet } from './todo.ts';

export function makeMysqlChannels(c: MysqlConnection): ChannelStore {
  return notYet(c, 'channels');
}
