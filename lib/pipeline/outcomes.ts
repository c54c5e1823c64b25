import type { Db } from '../storage/db';
import { conversionFailed, conversionSucceeded } from '../messaging/events';
import { publishEvent, type Broker } from '../messaging/queue';
import { markPublished, type Job } from './jobs';

/**
 * Publishes the outcome event of a job that has ended (done or failed), built from its row, then
 * records that it went out. Publish after commit: the row says done or failed first, so a crash
 * before markPublished leaves `published_at` empty and the reconciler publishes it again; the event
 * id is derived from the job, and notify sends one email per job outcome however often it arrives.
 */
export async function publishOutcome(deps: { db: Db; broker: Broker }, job: Job): Promise<void> {
  const base = { jobId: job.id, owner: job.ownerId, email: job.ownerEmail, filename: job.filename };
  const event = job.status === 'done'
    ? conversionSucceeded({ ...base, mp3BlobId: job.mp3BlobId!, durationSeconds: job.durationSeconds ?? 0, bytes: job.mp3Bytes ?? 0 })
    : conversionFailed({ ...base, reason: 'conversion', message: job.error ?? 'The conversion failed.' });
  await publishEvent(deps.broker, 'mp3', event);
  await markPublished(deps.db, job.id);
}
