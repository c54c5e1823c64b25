/**
 * lib/messaging owns how work moves between functions: the broker (RabbitMQ, or an in-process queue
 * on one machine), the event contract (events.ts) and the local stand-in for the Knative RabbitMQ
 * source (source.ts). amqplib is imported only here.
 */
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, GetMessage } from 'amqplib';
import { lazyClient } from '../core/clients';
import { getConfig, type Config } from '../core/config';
import { UnavailableError } from '../core/errors';
import type { CloudEvent } from 'cloudevents';
import { toAmqp, type AmqpMessage } from './events';
import { log } from '../core/log';
import { withSpan } from '../core/tracing';

export type QueueName = 'video' | 'mp3';

/**
 * The broker objects the code declares (and knative/ declares for the cluster, with the same
 * arguments): durable work queues that dead-letter into per-queue DLQs through one exchange.
 */
export const topology = {
  deadLetterExchange: 'video2mp3.dlx',
  queues: [
    { name: 'video', deadLetterQueue: 'video.dlq' },
    { name: 'mp3', deadLetterQueue: 'mp3.dlq' },
  ],
} as const;

export const queueArguments = { 'x-dead-letter-exchange': topology.deadLetterExchange };

export interface Delivery {
  message: AmqpMessage;
  /** Stored on disk by the broker (delivery mode 2). */
  persistent: boolean;
  ack(): void;
  /** nack without requeue: the message moves to the dead-letter queue. */
  deadLetter(): void;
  /** nack with requeue: the message goes back to the head of its queue. */
  requeue(): void;
}

export interface Consumer {
  stop(): Promise<void>;
}

export interface Broker {
  /** Resolves once the broker has the message (publisher confirms); 503 when it cannot. */
  publish(queue: QueueName, message: AmqpMessage): Promise<void>;
  /** Delivers up to `prefetch` unacknowledged messages at a time; keeps consuming across reconnects. */
  consume(queue: QueueName, prefetch: number, onDelivery: (d: Delivery) => void): Promise<Consumer>;
  /** One message, if any: `npm run dlq` inspects and replays dead letters with it. */
  get(queue: QueueName | `${QueueName}.dlq`): Promise<Delivery | undefined>;
  depth(queue: QueueName | `${QueueName}.dlq`): Promise<number>;
  purge(queue: QueueName | `${QueueName}.dlq`): Promise<void>;
  close(): Promise<void>;
}

async function declare(ch: Channel): Promise<void> {
  await ch.assertExchange(topology.deadLetterExchange, 'direct', { durable: true });
  for (const q of topology.queues) {
    await ch.assertQueue(q.name, { durable: true, arguments: queueArguments });
    await ch.assertQueue(q.deadLetterQueue, { durable: true });
    await ch.bindQueue(q.deadLetterQueue, topology.deadLetterExchange, q.name);
  }
}

const toMessage = (m: ConsumeMessage | GetMessage): AmqpMessage => ({
  body: m.content,
  contentType: m.properties.contentType as string,
  messageId: m.properties.messageId as string,
  headers: Object.fromEntries(Object.entries(m.properties.headers ?? {}).map(([k, v]) => [k, String(v)])),
  timestamp: typeof m.properties.timestamp === 'number' ? m.properties.timestamp : undefined,
});

interface Connection {
  model: ChannelModel;
  publisher: ConfirmChannel;
}

/**
 * RabbitMQ through amqplib: one long-lived connection per instance, replaced as soon as it closes
 * (a broker restart must not leave a stale connection behind — the original system's most reported
 * failure), and a publish that meets a dead connection tries once more on a fresh one.
 */
export function createAmqpBroker(url: string, connectTimeoutMs = 5000): Broker {
  let conn: Promise<Connection> | undefined;

  const connect = () => {
    if (conn) return conn;
    const attempt: Promise<Connection> = (async () => {
      // Loaded on first use: a process on the in-process queue never evaluates the driver.
      const amqp = await import('amqplib');
      const model = await amqp.connect(url, { timeout: connectTimeoutMs });
      model.on('error', (err: Error) => log.warn({ err }, 'broker connection error'));
      // Forget this connection when it closes, so the next call connects afresh (not a newer one).
      model.on('close', () => { if (conn === attempt) conn = undefined; });
      const publisher = await model.createConfirmChannel();
      publisher.on('error', (err: Error) => log.warn({ err }, 'broker channel error'));
      await declare(publisher);
      return { model, publisher };
    })().catch((err: unknown) => {
      if (conn === attempt) conn = undefined;
      throw new UnavailableError('message broker', { cause: err });
    });
    conn = attempt;
    return attempt;
  };

  const withChannel = async <T>(fn: (ch: ConfirmChannel) => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      const { model, publisher } = await connect();
      try {
        return await fn(publisher);
      } catch (err) {
        await model.close().catch(() => {});
        if (attempt >= 2) throw new UnavailableError('message broker', { cause: err });
      }
    }
  };

  const wrap = (ch: Channel, m: ConsumeMessage | GetMessage): Delivery => ({
    message: toMessage(m),
    persistent: m.properties.deliveryMode === 2,
    // If the channel died meanwhile, the broker redelivers the message: handlers are idempotent.
    ack: () => { try { ch.ack(m); } catch (err) { log.warn({ err }, 'ack failed; the broker will redeliver'); } },
    deadLetter: () => { try { ch.nack(m, false, false); } catch (err) { log.warn({ err }, 'nack failed; the broker will redeliver'); } },
    requeue: () => { try { ch.nack(m, false, true); } catch (err) { log.warn({ err }, 'nack failed; the broker will redeliver'); } },
  });

  return {
    async publish(queue, message) {
      await withChannel(async (ch) => {
        ch.sendToQueue(queue, message.body, {
          persistent: true,
          contentType: message.contentType,
          messageId: message.messageId,
          headers: message.headers,
          timestamp: message.timestamp ?? Math.floor(Date.now() / 1000),
        });
        await ch.waitForConfirms();
      });
    },

    async consume(queue, prefetch, onDelivery) {
      let stopped = false;
      let current: { ch: Channel; tag: string } | undefined;
      let timer: NodeJS.Timeout | undefined;
      const retry = (delayMs: number) => {
        clearTimeout(timer);
        timer = setTimeout(() => void start(Math.min(delayMs * 2, 10_000)), delayMs);
      };
      // A channel closes with its connection (a broker restart) or on a channel error: consume anew.
      const start = async (nextDelayMs: number): Promise<void> => {
        if (stopped) return;
        try {
          const { model } = await connect();
          const ch = await model.createChannel();
          ch.on('error', (err: Error) => log.warn({ err, queue }, 'consumer channel error'));
          ch.on('close', () => {
            if (stopped || current?.ch !== ch) return;
            current = undefined;
            log.warn({ queue }, 'consumer channel closed; consuming again');
            retry(500);
          });
          await ch.prefetch(prefetch);
          const { consumerTag } = await ch.consume(queue, (m) => {
            if (m) onDelivery(wrap(ch, m));
          });
          current = { ch, tag: consumerTag };
          log.info({ queue, prefetch }, 'consuming');
        } catch (err) {
          log.warn({ err, queue, retryInMs: nextDelayMs }, 'cannot consume yet; retrying');
          retry(nextDelayMs);
        }
      };
      await start(500);
      return {
        async stop() {
          stopped = true;
          clearTimeout(timer);
          const c = current;
          current = undefined;
          await c?.ch.cancel(c.tag).catch(() => {});
          await c?.ch.close().catch(() => {});
        },
      };
    },

    async get(queue) {
      return withChannel(async (ch) => {
        const m = await ch.get(queue, { noAck: false });
        return m ? wrap(ch, m) : undefined;
      });
    },

    async depth(queue) {
      return withChannel(async (ch) => (await ch.checkQueue(queue)).messageCount);
    },

    async purge(queue) {
      await withChannel(async (ch) => { await ch.purgeQueue(queue); });
    },

    async close() {
      const c = await conn?.catch(() => undefined);
      conn = undefined;
      // Channel first: closing only the connection can drop an ack still queued on the channel
      // (seen with get + ack + close: the message came back).
      await c?.publisher.close().catch(() => {});
      await c?.model.close().catch(() => {});
    },
  };
}

interface MemoryConsumer {
  prefetch: number;
  /** Delivered, neither acked nor dead-lettered yet: back to the queue if the consumer stops. */
  unsettled: Set<{ message: AmqpMessage; settled: boolean }>;
  onDelivery: (d: Delivery) => void;
}

interface MemoryQueue {
  ready: AmqpMessage[];
  consumers: MemoryConsumer[];
}

/** The embedded default: the same contract in process memory (what is queued is lost on exit). */
export function createMemoryBroker(): Broker {
  const queues = new Map<string, MemoryQueue>();
  const q = (name: string) => {
    let queue = queues.get(name);
    if (!queue) queues.set(name, (queue = { ready: [], consumers: [] }));
    return queue;
  };
  const dispatch = (name: string) => {
    const queue = q(name);
    for (const consumer of queue.consumers) {
      while (consumer.unsettled.size < consumer.prefetch && queue.ready.length > 0) {
        const entry = { message: queue.ready.shift()!, settled: false };
        consumer.unsettled.add(entry);
        const settle = (to: 'ack' | 'dead' | 'requeue') => {
          if (entry.settled) return;
          entry.settled = true;
          consumer.unsettled.delete(entry);
          if (to === 'dead') q(`${name}.dlq`).ready.push(entry.message);
          if (to === 'requeue') queue.ready.unshift(entry.message);
          setImmediate(() => dispatch(name));
        };
        const { message } = entry;
        setImmediate(() => consumer.onDelivery({ message, persistent: true, ack: () => settle('ack'), deadLetter: () => settle('dead'), requeue: () => settle('requeue') }));
      }
    }
  };
  return {
    async publish(queue, message) {
      q(queue).ready.push(message);
      dispatch(queue);
    },
    async consume(queue, prefetch, onDelivery) {
      const consumer: MemoryConsumer = { prefetch, unsettled: new Set(), onDelivery };
      q(queue).consumers.push(consumer);
      dispatch(queue);
      return {
        async stop() {
          q(queue).consumers = q(queue).consumers.filter((c) => c !== consumer);
          // As RabbitMQ does when a consumer's channel closes: what it had not settled is queued again.
          const requeue = [...consumer.unsettled].map((entry) => { entry.settled = true; return entry.message; });
          consumer.unsettled.clear();
          q(queue).ready.unshift(...requeue);
          dispatch(queue);
        },
      };
    },
    async get(queue) {
      const message = q(queue).ready.shift();
      return message && { message, persistent: true, ack: () => {}, deadLetter: () => q(`${queue}.dlq`).ready.push(message), requeue: () => q(queue).ready.unshift(message) };
    },
    async depth(queue) {
      return q(queue).ready.length;
    },
    async purge(queue) {
      q(queue).ready.length = 0;
    },
    async close() {},
  };
}

export function createBroker(config: Pick<Config, 'amqpUrl' | 'timeouts'>): Broker {
  return config.amqpUrl ? createAmqpBroker(config.amqpUrl, config.timeouts.brokerConnectMs) : createMemoryBroker();
}

/** The instance's broker. */
export const getBroker = lazyClient('broker', async () => createBroker(getConfig()), (b) => b.close());

/**
 * Publishes an event to a queue inside a producer span, so the message carries that span's trace
 * context (`ce-traceparent`, toAmqp) and the consumer's spans continue the same trace.
 */
export function publishEvent(broker: Broker, queue: QueueName, event: CloudEvent<object>): Promise<void> {
  return withSpan(`${queue} publish`, { kind: 'producer', attributes: { 'messaging.system': 'rabbitmq', 'messaging.destination.name': queue, 'messaging.message.id': event.id, 'cloudevents.event_type': event.type } },
    () => broker.publish(queue, toAmqp(event)));
}

export function describeBroker(config: Pick<Config, 'amqpUrl'>): string {
  if (!config.amqpUrl) return 'in-process queue';
  const u = new URL(config.amqpUrl);
  return `rabbitmq ${u.host}${u.pathname === '/' ? '' : u.pathname}`;
}
