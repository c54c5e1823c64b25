import { log } from '../core/log';
import { eventTypes, parseEvent, type AmqpMessage } from '../messaging/events';
import type { Broker, Delivery, QueueName } from '../messaging/queue';
import type { Db } from '../storage/db';
import { findJob } from './jobs';

/**
 * Re-drives dead letters by what the database says. An outage longer than a source's retry budget
 * dead-letters the events in flight; once the database answers again (the reconciler runs this last,
 * after its own queries succeeded), each dead `video.uploaded` whose job has had its turn and is not
 * finished, and each dead outcome whose email is not sent, goes back onto its queue; one whose work is
 * done, or whose job is gone, is dropped (a waiting job is published when its turn comes). A letter
 * that is not one of our events stays in the dead-letter queue for an operator (`npm run dlq`).
 */
export async function redriveDeadLetters(deps: { db: Db; broker: Broker }, max = 100): Promise<number> {
  let redriven = 0;
  for (const queue of ['video', 'mp3'] as const) {
    const held: Delivery[] = [];
    try {
      for (let n = 0; n < max; n++) {
        const d = await deps.broker.get(`${queue}.dlq`);
        if (!d) break;
        held.push(d);
        const verdict = await judge(deps.db, queue, d.message);
        if (verdict === 'keep') continue;
        if (verdict === 'redrive') {
          await deps.broker.publish(queue, withoutBrokerHeaders(d.message));
          redriven += 1;
        }
        held.pop();
        d.ack();
      }
    } finally {
      // Back in their order, once: taken one by one, a kept letter would be handed out again at once.
      for (const d of held.reverse()) d.requeue();
    }
  }
  if (redriven > 0) log.info({ redriven }, 'dead letters re-driven');
  return redriven;
}

async function judge(db: Db, queue: QueueName, message: AmqpMessage): Promise<'redrive' | 'drop' | 'keep'> {
  let jobId: string;
  try {
    const types = queue === 'video' ? [eventTypes.videoUploaded] : [eventTypes.conversionSucceeded, eventTypes.conversionFailed];
    const event = parseEvent(message.headers, message.body.toString('utf8'), types);
    const data = event.data as { jobId?: unknown };
    if (typeof data.jobId !== 'string') return 'keep';
    jobId = data.jobId;
  } catch {
    return 'keep';
  }
  const job = await findJob(db, jobId);
  if (!job) return 'drop';
  if (queue === 'video') return (job.status === 'queued' || job.status === 'converting') && job.releasedAt !== null ? 'redrive' : 'drop';
  if (job.status !== 'done' && job.status !== 'failed') return 'drop';
  const mailed = await db('notifications').where({ job_id: job.id }).whereIn('status', ['sent', 'rejected']).first();
  return mailed ? 'drop' : 'redrive';
}

/** As it was first published: without the x-death and x-first-death-* headers the broker added. */
function withoutBrokerHeaders(message: AmqpMessage): AmqpMessage {
  return { ...message, headers: Object.fromEntries(Object.entries(message.headers).filter(([k]) => !k.toLowerCase().startsWith('x-'))) };
}
