/**
 * A request that got no (complete) answer.
 * - `sent`: the request had been handed to the network (maybe delivered);
 * - `addressRefused`: the SSRF guard refused the address (nothing was sent);
 * - `timedOut`: no complete answer within the client's timeoutMs;
 * - `aborted`: the caller's signal aborted it;
 * - `code`: the system error code (ECONNREFUSED, ECONNRESET, ...) when there is one;
 * - `staleSocket`: it went out on a reused keep-alive socket that was reset soon, before
 *   any byte of an answer came back (the server had closed the idle connection).
 * The message never holds a header or a body.
 */
export class HttpSendFailure extends Error {
  override name = 'HttpSendFailure';
  readonly sent: boolean;
  readonly timedOut: boolean;
  readonly addressRefused: boolean;
  readonly aborted: boolean;
  readonly code: string | undefined;
  readonly staleSocket: boolean;
  constructor(
    message: string,
    details: { sent: boolean; timedOut?: boolean; addressRefused?: boolean; aborted?: boolean; code?: string | undefined; staleSocket?: boolean },
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.sent = details.sent;
    this.timedOut = details.timedOut ?? false;
    this.addressRefused = details.addressRefused ?? false;
    this.aborted = details.aborted ?? false;
    this.code = details.code;
    this.staleSocket = details.staleSocket ?? false;
  }
}
