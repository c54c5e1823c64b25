import { CloudEvent, HTTP } from 'cloudevents';
import { z } from 'zod';
import { BadInputError } from '../core/errors';
import { traceHeaders } from '../core/tracing';
import { mp3OptionsSchema } from '../media/options';

/** The event contract of the pipeline: types, source and data, in one place. */
export const eventTypes = {
  videoUploaded: 'io.github.video2mp3.video.uploaded',
  conversionSucceeded: 'io.github.video2mp3.conversion.succeeded',
  conversionFailed: 'io.github.video2mp3.conversion.failed',
  /** The scheduled maintenance (retention sweep, reconciler): the local stack's timer sends it. */
  maintenanceTick: 'io.github.video2mp3.maintenance.tick',
  /** What a Knative PingSource sends (its type cannot be chosen); on the maintenance route it means the same tick. */
  pingSourceTick: 'dev.knative.sources.ping',
} as const;
export const eventSource = '/video2mp3';

const base = {
  jobId: z.string().min(1).max(32),
  owner: z.string().min(1).max(36),
  email: z.email(),
  filename: z.string().min(1).max(255),
};
export const videoUploadedData = z.object({ ...base, videoBlobId: z.string().min(1).max(64), options: mp3OptionsSchema });
export const conversionSucceededData = z.object({
  ...base,
  mp3BlobId: z.string().min(1).max(64),
  durationSeconds: z.number().nonnegative(),
  bytes: z.number().int().nonnegative(),
});
export const conversionFailedData = z.object({ ...base, reason: z.string(), message: z.string() });
/** A tick carries nothing the handler uses; whatever a PingSource was given as data is ignored. */
export const maintenanceTickData = z.unknown().transform(() => ({}));

export type VideoUploaded = z.infer<typeof videoUploadedData>;
export type ConversionSucceeded = z.infer<typeof conversionSucceededData>;
export type ConversionFailed = z.infer<typeof conversionFailedData>;
export type MaintenanceTick = z.infer<typeof maintenanceTickData>;

export type PipelineEvent =
  | { type: typeof eventTypes.videoUploaded; id: string; data: VideoUploaded }
  | { type: typeof eventTypes.conversionSucceeded; id: string; data: ConversionSucceeded }
  | { type: typeof eventTypes.conversionFailed; id: string; data: ConversionFailed }
  | { type: typeof eventTypes.maintenanceTick | typeof eventTypes.pingSourceTick; id: string; data: MaintenanceTick };

function build(type: PipelineEvent['type'], id: string, data: object): CloudEvent<object> {
  return new CloudEvent({ specversion: '1.0', type, source: eventSource, id, datacontenttype: 'application/json', data });
}

// Ids of the outcome events are derived from the job, so a re-publish after a crash is recognisably
// the same event downstream.
export const videoUploaded = (data: VideoUploaded, id: string) => build(eventTypes.videoUploaded, id, data);
export const conversionSucceeded = (data: ConversionSucceeded) => build(eventTypes.conversionSucceeded, `${data.jobId}.succeeded`, data);
export const conversionFailed = (data: ConversionFailed) => build(eventTypes.conversionFailed, `${data.jobId}.failed`, data);
export const maintenanceTick = () => build(eventTypes.maintenanceTick, `tick.${Date.now()}`, {});

export interface AmqpMessage {
  body: Buffer;
  contentType: string;
  messageId: string;
  headers: Record<string, string>;
  /** AMQP `timestamp` property, in seconds (set when published; the source maps it to ce-time). */
  timestamp?: number;
}

/**
 * An event as an AMQP message that the Knative RabbitMQ source turns back into the same event:
 * AMQP content_type and message_id, plus ce-* headers (and a `content-type` header, which the source
 * maps to datacontenttype) so our type and source survive: the Knative RabbitMQ source rebuilds a binary event
 * from ce-* headers, and wraps anything else as type dev.knative.rabbitmq.event. The active span's
 * trace context goes as the `traceparent`/`tracestate` extensions (`ce-` headers: the source drops
 * only the bare `traceparent`/`tracestate` headers; docs/operations.md, "Traces").
 */
export function toAmqp(event: CloudEvent<object>): AmqpMessage {
  const headers: Record<string, string> = {
    'ce-specversion': event.specversion,
    'ce-id': event.id,
    'ce-type': event.type,
    'ce-source': event.source,
    'content-type': 'application/json',
  };
  if (event.time) headers['ce-time'] = event.time;
  for (const [name, value] of Object.entries(traceHeaders())) headers[`ce-${name}`] = value;
  return { body: Buffer.from(JSON.stringify(event.data)), contentType: 'application/json', messageId: event.id, headers };
}

const schemas = {
  [eventTypes.videoUploaded]: videoUploadedData,
  [eventTypes.conversionSucceeded]: conversionSucceededData,
  [eventTypes.conversionFailed]: conversionFailedData,
  [eventTypes.maintenanceTick]: maintenanceTickData,
  [eventTypes.pingSourceTick]: maintenanceTickData,
} as const;

/**
 * Parses a delivered CloudEvent (binary or structured) and checks its type and data. A malformed
 * event is a 400: the source does not retry it, and RabbitMQ dead-letters it.
 */
export function parseEvent(headers: Record<string, unknown>, body: unknown, accept: PipelineEvent['type'][]): PipelineEvent {
  let event: CloudEvent<unknown>;
  try {
    const received = HTTP.toEvent({ headers: headers as Record<string, string>, body });
    event = (Array.isArray(received) ? received[0] : received) as CloudEvent<unknown>;
  } catch (err) {
    throw new BadInputError(`not a CloudEvent: ${(err as Error).message}`);
  }
  const type = event.type as PipelineEvent['type'];
  if (!accept.includes(type)) throw new BadInputError(`unexpected event type ${event.type}`);
  let data = event.data;
  if (typeof data === 'string' || Buffer.isBuffer(data)) {
    try {
      data = JSON.parse(data.toString());
    } catch {
      throw new BadInputError('event data is not JSON');
    }
  }
  const parsed = schemas[type].safeParse(data);
  if (!parsed.success) throw new BadInputError(`invalid ${type} data: ${parsed.error.issues[0]!.path.join('.')} ${parsed.error.issues[0]!.message}`);
  return { type, id: event.id, data: parsed.data } as PipelineEvent;
}
