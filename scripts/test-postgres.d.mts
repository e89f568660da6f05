export const LOCAL_DEFAULT: string;
export function answers(url: string, timeoutSeconds?: number): Promise<boolean>;
/** The first directory from `dir` up to / that other users cannot enter, or null. */
export function unreachableAncestor(dir: string): string | null;
export function ensurePostgres(log?: (message: string) => void): Promise<{ url: string; stop(): Promise<void> }>;
