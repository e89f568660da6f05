import type { PostsStore } from '../concerns/posts.ts';
import type { MysqlConnection } from './connection.ts';
import { notYet } from './todo.ts';

export function makeMysqlPosts(c: MysqlConnection): PostsStore {
  return notYet(c, 'posts');
}
