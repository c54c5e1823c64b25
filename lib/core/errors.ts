import { formatSize } from './format';

/**
 * Domain errors: what went wrong, in the words of the product, with a stable `code` a client can
 * rely on. Modules throw these; lib/http/errors.ts alone turns them into status codes and bodies.
 */
export abstract class DomainError extends Error {
  abstract readonly code: string;
}

/** The input is malformed or breaks a rule (a field, a header, a form). */
export class BadInputError extends DomainError {
  override name = 'BadInputError';
  readonly code = 'bad_request';
}

/** No valid bearer token (missing, malformed, expired, unknown key). */
export class UnauthorizedError extends DomainError {
  override name = 'UnauthorizedError';
  readonly code = 'unauthorized';
  constructor(message = 'a valid bearer token is required', options?: ErrorOptions) {
    super(message, options);
  }
}

/** Email or password is wrong; deliberately the same for both. */
export class InvalidCredentialsError extends DomainError {
  override name = 'InvalidCredentialsError';
  readonly code = 'invalid_credentials';
  constructor() {
    super('email or password is wrong');
  }
}

/** Unknown, foreign or malformed id: the three look alike on purpose. */
export class NotFoundError extends DomainError {
  override name = 'NotFoundError';
  readonly code = 'not_found';
  constructor(what: string, options?: ErrorOptions) {
    super(`${what} not found`, options);
  }
}

/** The thing exists but is not in a state that allows this (a taken email, an MP3 not ready yet). */
export class ConflictError extends DomainError {
  override name = 'ConflictError';
  readonly code = 'conflict';
}

/** It existed and is gone for good (an expired link, a swept MP3). */
export class GoneError extends DomainError {
  override name = 'GoneError';
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** A streamed body without a length where one is required. */
export class LengthRequiredError extends DomainError {
  override name = 'LengthRequiredError';
  readonly code = 'length_required';
  constructor() {
    super('a Content-Length header is required');
  }
}

/** The request did not arrive (headers or body) within the server's time limit. */
export class RequestTimeoutError extends DomainError {
  override name = 'RequestTimeoutError';
  readonly code = 'request_timeout';
  constructor() {
    super('the request took too long to arrive');
  }
}

/** More bytes than the configured limit; the message names the limit. */
export class TooLargeError extends DomainError {
  override name = 'TooLargeError';
  readonly code = 'too_large';
  constructor(readonly limit: number, what = 'the body') {
    super(`${what} is larger than the limit of ${limit} bytes (${formatSize(limit)})`);
  }
}

/**
 * An event larger than an event receiver takes: it can never be accepted, so it is answered with a
 * status the RabbitMQ source does not retry (it retries 413) and goes to the dead-letter queue at
 * once instead of holding a delivery slot through the source's retries (docs/deploy.md).
 */
export class EventTooLargeError extends TooLargeError {
  override name = 'EventTooLargeError';
  constructor(limit: number) {
    super(limit, 'the event');
  }
}

/** Not a kind of content this route takes (not a video, not JSON, compressed). */
export class UnsupportedMediaError extends DomainError {
  override name = 'UnsupportedMediaError';
  readonly code = 'unsupported_media_type';
}

/** A byte range outside the file. */
export class RangeNotSatisfiableError extends DomainError {
  override name = 'RangeNotSatisfiableError';
  readonly code = 'range_not_satisfiable';
  constructor(readonly size: number) {
    super('the requested range is outside the file');
  }
}

/** Too many attempts or too much use; try again after `retryAfterSeconds`. */
export class TooManyRequestsError extends DomainError {
  override name = 'TooManyRequestsError';
  readonly code = 'too_many_requests';
  constructor(readonly retryAfterSeconds: number, message = 'too many attempts, try again later') {
    super(message);
  }
}

/** A dependency (database, storage, broker, SMTP, converter) failed: the caller should try again later. */
export class UnavailableError extends DomainError {
  override name = 'UnavailableError';
  readonly code = 'unavailable';
  constructor(what: string, options?: ErrorOptions) {
    super(`${what} is unavailable, try again shortly`, options);
  }
}

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
