// `npm run dlq -- list QUEUE` prints the dead letters of a queue (video.dlq or mp3.dlq; `video` and
// `mp3` name their DLQs too) without removing them; `npm run dlq -- replay QUEUE` moves them back onto
// the queue they died in. With retry budgets sized for outages and the reconciler re-publishing
// whatever an outage still cost, a dead letter is usually a malformed event: list first, replay what
// deserves another try after fixing its cause. Reads AMQP_URL like the functions do.
import { getConfig } from '../lib/core/config';
import { createAmqpBroker, topology, type Delivery, type QueueName } from '../lib/messaging/queue';

const usage = 'usage: npm run dlq -- list|replay video.dlq|mp3.dlq';

function describe(n: number, d: Delivery) {
  const text = d.message.body.toString('utf8');
  let jobId: unknown;
  try {
    jobId = (JSON.parse(text) as { jobId?: unknown }).jobId;
  } catch {
    jobId = undefined;
  }
  return {
    n,
    messageId: d.message.messageId,
    type: d.message.headers['ce-type'],
    jobId,
    contentType: d.message.contentType,
    bytes: d.message.body.length,
    body: text.length > 300 ? `${text.slice(0, 300)}…` : text,
  };
}

async function main() {
  const [command, name] = process.argv.slice(2);
  const queue = topology.queues.find((q) => q.name === name || q.deadLetterQueue === name);
  if ((command !== 'list' && command !== 'replay') || !queue) {
    console.error(usage);
    process.exit(2);
  }
  const { amqpUrl, timeouts } = getConfig();
  if (!amqpUrl) {
    console.error('AMQP_URL is not set: the in-process queue keeps no dead letters outside its process (the reconciler re-publishes lost work there).');
    process.exit(2);
  }
  const broker = createAmqpBroker(amqpUrl, timeouts.brokerConnectMs);
  try {
    const dlq = queue.deadLetterQueue;
    // Count first: a replayed message that dies again lands behind us and must not loop.
    const count = await broker.depth(dlq);
    for (let n = 1; n <= count; n++) {
      const d = await broker.get(dlq);
      if (!d) break;
      if (command === 'list') {
        // Left unacknowledged: the broker puts it back when the connection closes.
        console.log(JSON.stringify(describe(n, d)));
      } else {
        // As it was first published: without the x-death and x-first-death-* headers the broker added.
        const headers = Object.fromEntries(Object.entries(d.message.headers).filter(([k]) => !k.toLowerCase().startsWith('x-')));
        await broker.publish(queue.name as QueueName, { ...d.message, headers });
        d.ack();
        console.log(JSON.stringify({ replayed: describe(n, d).messageId, to: queue.name }));
      }
    }
    console.error(`${command === 'list' ? 'listed' : 'replayed'} ${count} message(s) of ${dlq}`);
  } finally {
    await broker.close();
  }
}

main().catch((err: unknown) => {
  console.error(`dlq: ${(err as Error).message}`);
  process.exit(1);
});
