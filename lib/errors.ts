/** An error that knows the HTTP status and the stable code a client sees. */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** A dependency (database, storage, broker, SMTP) failed: the caller should try again later. */
export class UnavailableError extends HttpError {
  constructor(what: string, override readonly cause?: unknown) {
    super(503, 'unavailable', `${what} is unavailable, try again shortly`, { 'Retry-After': '5' });
  }
}

export const badRequest = (message: string) => new HttpError(400, 'bad_request', message);
export const unauthorized = (message = 'a valid bearer token is required') =>
  new HttpError(401, 'unauthorized', message, { 'WWW-Authenticate': 'Bearer' });
export const invalidCredentials = () =>
  new HttpError(401, 'invalid_credentials', 'email or password is wrong', { 'WWW-Authenticate': 'Basic realm="video2mp3"' });
export const notFound = (what: string) => new HttpError(404, 'not_found', `${what} not found`);
export const conflict = (message: string) => new HttpError(409, 'conflict', message);
export const lengthRequired = () => new HttpError(411, 'length_required', 'a Content-Length header is required');
export const tooLarge = (limit: number) => new HttpError(413, 'too_large', `the body is larger than the limit of ${limit} bytes`);
export const unsupportedMedia = (message: string) => new HttpError(415, 'unsupported_media_type', message);
export const rangeNotSatisfiable = (size: number) =>
  new HttpError(416, 'range_not_satisfiable', 'the requested range is outside the file', { 'Content-Range': `bytes */${size}` });
export const tooManyRequests = (retryAfterSeconds: number) =>
  new HttpError(429, 'too_many_requests', 'too many attempts, try again later', {
    'Retry-After': String(Math.max(1, Math.ceil(retryAfterSeconds))),
  });

/** Network-level failures of a driver: connection refused, reset, DNS, timeouts. */
const transientCodes = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  'PROTOCOL_CONNECTION_LOST', 'ER_CON_COUNT_ERROR', 'ER_LOCK_DEADLOCK', 'ER_LOCK_WAIT_TIMEOUT', 'SQLITE_BUSY',
]);

/** True for errors that a retry may cure (a dependency that is down or busy). */
export function isTransient(err: unknown): boolean {
  if (err instanceof UnavailableError) return true;
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && transientCodes.has(code)) return true;
  const name = err.name;
  if (/^Mongo(Network|ServerSelection|NotConnected|Topology|PoolCleared)/.test(name)) return true;
  if (name === 'KnexTimeoutError') return true;
  return err.cause !== undefined && err.cause !== err && isTransient(err.cause);
}

export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: { error: { code: string; message: string } };
}

/** The one place an error becomes a response. Unknown errors become a generic 500; callers log them. */
export function toErrorResponse(err: unknown): ErrorResponse {
  const e = err instanceof HttpError ? err : isTransient(err) ? new UnavailableError('a backing service', err) : undefined;
  if (e) return { status: e.status, headers: e.headers, body: { error: { code: e.code, message: e.message } } };
  return { status: 500, headers: {}, body: { error: { code: 'internal', message: 'internal error' } } };
}
