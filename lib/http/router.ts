import express, { type NextFunction, type Request, type RequestHandler, type Response, type Router } from 'express';
import type { z } from 'zod';
import { BadInputError, NotFoundError, UnsupportedMediaError } from '../core/errors';
import type { Claims } from '../auth/tokens';
import { authenticate } from '../auth/tokens';
import { writeError } from './errors';

export type { Request, Response, Router };

/** A router for one function's paths; async handlers' rejections reach writeError. */
export const createRouter = (): Router => express.Router({ strict: false });

/**
 * The client's mistakes that express and body-parser report as plain errors with a 4xx `status`:
 * malformed JSON, an unreadable body, a path whose percent escapes do not decode (a URIError from
 * the router's parameter decoding). They become a BadInputError (400) instead of a 500.
 */
export function fromExpress(err: unknown): unknown {
  if (err instanceof URIError) return new BadInputError('the path has a malformed percent escape', { cause: err });
  const status = (err as { status?: unknown } | undefined)?.status;
  const type = (err as { type?: unknown } | undefined)?.type;
  if (typeof status === 'number' && status >= 400 && status < 500 && typeof type === 'string') {
    return new BadInputError(type === 'entity.parse.failed' ? 'the body is not valid JSON' : `the body could not be read (${type})`, { cause: err });
  }
  return err;
}

/** Express error middleware: express's and body-parser's client errors become JSON 4xx too. */
export function errorMiddleware(err: unknown, req: Request, res: Response, _next: NextFunction): void {
  writeError(req, res, fromExpress(err));
}

/** The function handler for a router: unmatched paths are 404, errors go through writeError. */
export function handle(router: Router) {
  return (req: Request, res: Response): void => {
    router(req, res, (err?: unknown) => writeError(req, res, err ? fromExpress(err) : new NotFoundError('route')));
  };
}

/** Validates a JSON body (or anything parsed) against a schema; 415 when it is not JSON at all. */
export function parseJson<T extends z.ZodType>(req: Request, schema: T): z.infer<T> {
  if (!req.is('application/json')) throw new UnsupportedMediaError('send Content-Type: application/json');
  return parseWith(schema, req.body);
}

/** Validates input against a schema; the first problem becomes a 400 naming the field. */
export function parseWith<T extends z.ZodType>(schema: T, input: unknown): z.infer<T> {
  const result = schema.safeParse(input);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new BadInputError(issue.path.length ? `${issue.path.join('.')}: ${issue.message}` : issue.message);
  }
  return result.data;
}

/**
 * The client's address. X-Forwarded-For counts only as far as TRUST_PROXY trusts the hops in front
 * (express's `trust proxy`, set on every function's app by createServer): by default it is ignored
 * and the connection's peer is the client, so a client cannot pick its own address.
 */
export function clientIp(req: Request): string {
  return req.ip || req.socket.remoteAddress || 'unknown';
}

/** Middleware: the route needs a valid bearer token; its claims are in `res.locals.user`. */
export const requireUser: RequestHandler = (req, res, next) => {
  res.locals.user = authenticate(req.headers.authorization);
  next();
};

/** The claims `requireUser` put on the response. */
export const userOf = (res: Response): Claims => res.locals.user as Claims;
