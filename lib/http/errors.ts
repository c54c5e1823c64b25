import type http from 'node:http';
import {
  BadInputError, ConflictError, DomainError, EventTooLargeError, GoneError, InvalidCredentialsError, isTransient, LengthRequiredError, NotFoundError,
  RangeNotSatisfiableError, RequestTimeoutError, TooLargeError, TooManyRequestsError, UnauthorizedError, UnavailableError, UnsupportedMediaError,
} from '../core/errors';
import { log } from '../core/log';

export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: { error: { code: string; message: string } };
}

/** Status and extra headers of each domain error: the only place errors meet HTTP. */
function statusOf(err: DomainError): { status: number; headers?: Record<string, string> } {
  if (err instanceof BadInputError) return { status: 400 };
  if (err instanceof UnauthorizedError) return { status: 401, headers: { 'WWW-Authenticate': 'Bearer' } };
  if (err instanceof InvalidCredentialsError) return { status: 401, headers: { 'WWW-Authenticate': 'Basic realm="video2mp3"' } };
  if (err instanceof NotFoundError) return { status: 404 };
  if (err instanceof RequestTimeoutError) return { status: 408, headers: { Connection: 'close' } };
  if (err instanceof ConflictError) return { status: 409 };
  if (err instanceof GoneError) return { status: 410 };
  if (err instanceof LengthRequiredError) return { status: 411 };
  if (err instanceof EventTooLargeError) return { status: 400 };
  if (err instanceof TooLargeError) return { status: 413 };
  if (err instanceof UnsupportedMediaError) return { status: 415 };
  if (err instanceof RangeNotSatisfiableError) return { status: 416, headers: { 'Content-Range': `bytes */${err.size}` } };
  if (err instanceof TooManyRequestsError) {
    return { status: 429, headers: { 'Retry-After': String(Math.max(1, Math.ceil(err.retryAfterSeconds))) } };
  }
  if (err instanceof UnavailableError) return { status: 503, headers: { 'Retry-After': '5' } };
  return { status: 500 };
}

/** Unknown errors become a generic 500 (never echoed); driver failures a retry may cure become 503. */
export function toErrorResponse(err: unknown): ErrorResponse {
  const domain = err instanceof DomainError ? err : isTransient(err) ? new UnavailableError('a backing service', { cause: err }) : undefined;
  if (domain) {
    const { status, headers = {} } = statusOf(domain);
    if (status !== 500) return { status, headers, body: { error: { code: domain.code, message: domain.message } } };
  }
  return { status: 500, headers: {}, body: { error: { code: 'internal', message: 'internal error' } } };
}

/**
 * Answers a request with the error as `{error: {code, message}}` and logs it: a 500 at error with
 * its cause, an expected 503 at warn, client mistakes at info. Works on plain node responses and on
 * express's (which extend them).
 */
export function writeError(req: http.IncomingMessage, res: http.ServerResponse, err: unknown): void {
  const { status, headers, body } = toErrorResponse(err);
  const where = { method: req.method, url: (req as { originalUrl?: string }).originalUrl ?? req.url, status };
  if (status >= 500 && status !== 503) log.error({ err, ...where }, 'request failed');
  else if (status === 503) log.warn({ err, ...where }, 'request deferred: a dependency is unavailable');
  else log.info({ ...where, code: body.error.code }, 'request rejected');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) }).end(text);
}
