/**
 * What an operation refuses, by kind, so that each caller maps it its own way: the CLI
 * prints the message and exits 1; an HTTP API answers 404 (not-found), 409 (conflict)
 * or 400 (invalid).
 */
export type OperationErrorKind =
  /** no such post or channel */
  | 'not-found'
  /** the post or channel is not in a state that allows it (a published post edited, a key reused) */
  | 'conflict'
  /** the input itself is wrong (content too long for its channel, a bad cursor) */
  | 'invalid';

export class OperationError extends Error {
  override name = 'OperationError';
  constructor(
    readonly kind: OperationErrorKind,
    message: string,
  ) {
    super(message);
  }
}

export const notFound = (message: string): OperationError => new OperationError('not-found', message);
export const conflict = (message: string): OperationError => new OperationError('conflict', message);
export const invalid = (message: string): OperationError => new OperationError('invalid', message);
