import { HTTP, type CloudEvent } from 'cloudevents';

/** The binary-mode HTTP request the RabbitMQ source would send for an event of ours. */
export function toHttp(event: CloudEvent<object>) {
  const message = HTTP.binary(event);
  return { headers: message.headers as Record<string, string>, body: message.body as string };
}
