import type { Request, Response } from 'express';
import { eventsHandled } from '../core/metrics';
import { parseEvent, type PipelineEvent } from '../messaging/events';
import { writeError } from './errors';

/**
 * The handler of an event function. The Knative RabbitMQ source acks a 2xx, retries 404/413/425/429/
 * 502/503/504 and network errors, and never retries a 500 (docs/deploy.md, "How events flow"). So:
 * done → 200; a dependency down → 503 (retry); a malformed event → 400 (dead-lettered, no retry loop).
 */
export function handleEvent<T extends PipelineEvent['type']>(
  accept: T[],
  fn: (event: Extract<PipelineEvent, { type: T }>) => Promise<object>,
) {
  return async (req: Request, res: Response): Promise<void> => {
    let type = 'invalid';
    try {
      const event = parseEvent(req.headers, req.body, accept) as Extract<PipelineEvent, { type: T }>;
      type = event.type;
      res.status(200).json(await fn(event));
    } catch (err) {
      writeError(req, res, err);
    }
    const outcome = res.statusCode < 300 ? 'ok' : res.statusCode === 503 ? 'retry' : res.statusCode < 500 ? 'rejected' : 'error';
    eventsHandled.inc({ type, outcome });
  };
}
