export const MYSQL_LOCAL_DEFAULT: string;
export function probeMysql(url: string, timeoutMs?: number): Promise<{ ok: true; version: string } | { ok: false; reason: string }>;
export function findMysql(env?: NodeJS.ProcessEnv): Promise<{ url: string; version: string } | { url: null; line: string }>;
