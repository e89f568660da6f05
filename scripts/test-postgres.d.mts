export const LOCAL_DEFAULT: string;
export function answers(url: string, timeoutSeconds?: number): Promise<boolean>;
export function ensurePostgres(log?: (message: string) => void): Promise<{ url: string; stop(): Promise<void> }>;
