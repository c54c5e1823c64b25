import express, { type NextFunction, type Request, type Response, type Router } from 'express';
import type { z } from 'zod';
import { badRequest, notFound, toErrorResponse, unsupportedMedia } from './errors';
import { parseEvent, type PipelineEvent } from './events';
import { log } from './log';

export type { Request, Response };

/** A router for one function's paths; async handlers' rejections reach sendError. */
export const createRouter = (): Router => express.Router({ strict: false });

/** Sends an error as `{error: {code, message}}`; unknown errors are logged and answered 500. */
export function sendError(req: Request, res: Response, err: unknown): void {
  const { status, headers, body } = toErrorResponse(err);
  if (status >= 500) log.error({ err, method: req.method, url: req.originalUrl, status }, 'request failed');
  else log.info({ method: req.method, url: req.originalUrl, status, code: body.error.code }, 'request rejected');
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.status(status).set(headers).json(body);
}

/** Express error middleware: body-parser's errors (malformed JSON, …) become JSON 4xx too. */
export function errorMiddleware(err: unknown, req: Request, res: Response, _next: NextFunction): void {
  const status = (err as { status?: unknown }).status;
  const type = (err as { type?: unknown }).type;
  if (typeof status === 'number' && status >= 400 && status < 500 && typeof type === 'string') {
    sendError(req, res, badRequest(type === 'entity.parse.failed' ? 'the body is not valid JSON' : `the body could not be read (${type})`));
    return;
  }
  sendError(req, res, err);
}

/** The function handler for a router: unmatched paths are 404, errors go through sendError. */
export function handle(router: Router) {
  return (req: Request, res: Response): void => {
    router(req, res, (err?: unknown) => sendError(req, res, err ?? notFound('route')));
  };
}

/** Validates a JSON body (or anything parsed) against a schema; 415 when it is not JSON at all. */
export function parseJson<T extends z.ZodType>(req: Request, schema: T): z.infer<T> {
  if (!req.is('application/json')) throw unsupportedMedia('send Content-Type: application/json');
  const result = schema.safeParse(req.body);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw badRequest(issue.path.length ? `${issue.path.join('.')}: ${issue.message}` : issue.message);
  }
  return result.data;
}

/** The client's address; behind Knative's ingress the first X-Forwarded-For entry. */
export function clientIp(req: Request): string {
  const forwarded = req.headers['x-forwarded-for'];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim();
  return first || req.socket.remoteAddress || 'unknown';
}

/**
 * The handler of an event function. The Knative RabbitMQ source acks a 2xx, retries 404/413/425/429/
 * 502/503/504 and network errors, and never retries a 500 (platform.md §2). So: done → 200; a
 * dependency down → 503 (retry); a malformed event → 400 (dead-lettered, no retry loop).
 */
export function handleEvent<T extends PipelineEvent['type']>(
  accept: T[],
  fn: (event: Extract<PipelineEvent, { type: T }>) => Promise<object>,
) {
  return async (req: Request, res: Response): Promise<void> => {
    try {
      const event = parseEvent(req.headers, req.body, accept) as Extract<PipelineEvent, { type: T }>;
      res.status(200).json(await fn(event));
    } catch (err) {
      sendError(req, res, err);
    }
  };
}
