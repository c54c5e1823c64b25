/**
 * lib/mail owns telling users: writing the email for a job's outcome (compose.ts), sending it exactly
 * once per outcome however often the event arrives (this module), and the SMTP or outbox transport
 * (mailer.ts). nodemailer is imported only here.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { getConfig, type Config } from '../core/config';
import { isTransient, UnavailableError } from '../core/errors';
import { log } from '../core/log';
import { mailDeliveries } from '../core/metrics';
import { withSpan } from '../core/tracing';
import { findUserById } from '../auth/users';
import { eventTypes } from '../messaging/events';
import { findJob, type Job } from '../pipeline/jobs';
import { isDuplicateKey, type Db } from '../storage/db';
import { composeMessage, outcomeOf, type Outcome, type OutcomeEvent } from './compose';
import { PermanentMailError, type Mailer } from './mailer';

export type { Outcome, OutcomeEvent };

export interface NotifyResult {
  jobId: string;
  outcome: Outcome;
  /**
   * sent: the server accepted it now; rejected: refused for good, recorded; duplicate: an earlier
   * delivery already did it; ignored: the database does not back the event (no such job, or the job
   * is not in the state the event claims), so nothing is sent.
   */
  status: 'sent' | 'rejected' | 'duplicate' | 'ignored';
  messageId?: string;
}

/**
 * How long a 'sending' row belongs to the delivery that wrote it. Longer than a send can take
 * (timeouts.mailSendMs), so a live attempt is never overtaken; short enough that a crashed one is taken
 * over by the redelivery that waits it out.
 */
export const leaseMs = (config: Pick<Config, 'timeouts'>) => config.timeouts.mailSendMs + 10_000;

/**
 * Makes this delivery the one that sends: returns its claim stamp (the row's updated_at), or
 * undefined when the notification is already sent or rejected. When another delivery holds a fresh
 * claim, waits (in this request) until it finishes or its lease runs out, rather than answering 503:
 * the source's retries are over within seconds, and a crashed attempt's lease would outlast them and
 * dead-letter the event without any email.
 */
async function claim(db: Db, key: { job_id: string; outcome: Outcome }, recipient: string, leaseMs: number): Promise<number | undefined> {
  const giveUpAt = Date.now() + 2 * leaseMs;
  while (Date.now() < giveUpAt) {
    const now = Date.now();
    try {
      await db('notifications').insert({ ...key, status: 'sending', recipient, created_at: now, updated_at: now });
      return now;
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
    }
    const row = await db('notifications').where(key).first();
    if (!row) continue;
    if (row.status !== 'sending') return undefined;
    const heldFor = now - Number(row.updated_at);
    if (heldFor >= leaseMs) {
      // Taking over is conditional on the stamp we saw, so of two deliveries only one wins.
      const taken = await db('notifications').where({ ...key, status: 'sending', updated_at: row.updated_at }).update({ updated_at: now, recipient });
      if (taken === 1) return now;
      continue;
    }
    await sleep(Math.min(250, leaseMs - heldFor));
  }
  throw new UnavailableError('notification (another delivery is sending it)');
}

/**
 * Marks the notification sent. The email is already out, so a database that is down right now (an
 * outage, a restart) is waited for, up to the claim's lease, instead of giving up: giving up leaves the
 * row `sending`, and whoever takes it over after the lease sends the email a second time.
 */
async function recordSent(db: Db, key: { job_id: string; outcome: Outcome }, messageId: string, waitMs: number): Promise<void> {
  const giveUpAt = Date.now() + waitMs;
  for (;;) {
    try {
      await db('notifications').where(key).update({ status: 'sent', message_id: messageId, error: null, updated_at: Date.now() });
      return;
    } catch (err) {
      if (!isTransient(err) || Date.now() >= giveUpAt) throw err;
      log.warn({ err, jobId: key.job_id }, 'email sent but not yet recorded: the database is unavailable; trying again');
      await sleep(500);
    }
  }
}

/**
 * The event as the database tells it. An event is only a hint that a job may have ended: anyone who
 * can reach the receiver can post one, so the job, its state, its owner and the owner's address are
 * read here, and every field the email shows comes from those rows, never from the event.
 */
async function confirm(db: Db, event: OutcomeEvent): Promise<{ event: OutcomeEvent } | { ignored: string }> {
  const job = await findJob(db, event.data.jobId);
  if (!job) return { ignored: 'no such job' };
  const wanted = event.type === eventTypes.conversionSucceeded ? 'done' : 'failed';
  if (job.status !== wanted) return { ignored: `the job is ${job.status}, not ${wanted}` };
  const owner = await findUserById(db, job.ownerId);
  if (!owner) return { ignored: 'the owner has no account' };
  return { event: fromJob(event, job, owner.email) };
}

function fromJob(event: OutcomeEvent, job: Job, email: string): OutcomeEvent {
  const base = { jobId: job.id, owner: job.ownerId, email, filename: job.filename };
  if (event.type === eventTypes.conversionSucceeded) {
    if (!job.mp3BlobId) throw new Error(`job ${job.id} is done without an MP3`);
    return { ...event, data: { ...base, mp3BlobId: job.mp3BlobId, durationSeconds: job.durationSeconds ?? 0, bytes: job.mp3Bytes ?? 0 } };
  }
  return { ...event, data: { ...base, reason: 'conversion', message: job.error ?? 'The file could not be converted.' } };
}

/**
 * Sends the one email for a job outcome, however often the event is delivered, to the job owner's
 * address from the database and only if the job really ended that way (`confirm`): the notifications
 * row (primary key job_id + outcome) records it. Returns normally when sent, already sent, or
 * permanently rejected (ack); throws UnavailableError (503, the source retries) when the mail
 * server is down or answers 4xx.
 *
 * At-least-once can still send twice, rarely, in two windows:
 * 1. The server accepted the message (250 after DATA) but the row never says 'sent': the process
 *    crashed, the database write failed, or the connection dropped before the 250 reached us
 *    (including our own send deadline aborting right then, and the RFC 1047 lost-reply case). The
 *    redelivery finds a 'sending' row, waits out its lease and sends again. There is no transaction
 *    spanning the database and the SMTP server; the stable Message-ID (<jobId>.<outcome>@domain)
 *    lets mail stores and clients recognise the copy.
 * 2. A delivery stalls (process frozen, not crashed) longer than the lease while its send is still
 *    in flight; the send deadline (mailer) bounds the send itself, not a frozen process.
 * Two concurrent deliveries otherwise never both send: the insert or the conditional takeover
 * admits one; the other waits for its result.
 */
export async function notifyOutcome(
  db: Db,
  mailer: Mailer,
  hint: OutcomeEvent,
  opts: { config?: Readonly<Config>; leaseMs?: number } = {},
): Promise<NotifyResult> {
  const config = opts.config ?? getConfig();
  const outcome = outcomeOf(hint);
  const confirmed = await confirm(db, hint);
  if ('ignored' in confirmed) {
    log.warn({ jobId: hint.data.jobId, outcome, reason: confirmed.ignored }, 'outcome event not backed by the database; nothing sent');
    return { jobId: hint.data.jobId, outcome, status: 'ignored' };
  }
  const { event } = confirmed;
  const { jobId, email } = event.data;
  const key = { job_id: jobId, outcome };

  const stamp = await claim(db, key, email, opts.leaseMs ?? leaseMs(config));
  if (stamp === undefined) return { jobId, outcome, status: 'duplicate' };

  const message = composeMessage(event, config);
  let sent;
  try {
    sent = await withSpan('send mail', { kind: 'client', attributes: { 'video2mp3.job_id': jobId, 'video2mp3.outcome': outcome } }, () => mailer.send(message));
    mailDeliveries.inc({ outcome: 'sent' });
  } catch (err) {
    mailDeliveries.inc({ outcome: err instanceof PermanentMailError ? 'rejected' : 'retry' });
    if (err instanceof PermanentMailError) {
      await db('notifications').where(key).update({ status: 'rejected', error: err.message, updated_at: Date.now() });
      log.warn({ jobId, outcome, responseCode: err.responseCode, error: err.message }, 'email rejected by the mail server; not retrying');
      return { jobId, outcome, status: 'rejected' };
    }
    // Release the claim so the source's retry sends at once instead of waiting out the lease.
    await db('notifications').where({ ...key, status: 'sending', updated_at: stamp })
      .update({ updated_at: 0, error: String((err as Error).message).slice(0, 500) })
      .catch((releaseErr: unknown) => log.warn({ err: releaseErr, jobId }, 'could not release the notification claim'));
    throw err;
  }
  // Window 1 of the comment above: the message is out, the row does not say so yet.
  await recordSent(db, key, sent.messageId, opts.leaseMs ?? leaseMs(config));

  if (sent.outboxFile) {
    // The link is a bearer credential for days: the log names the job and the expiry, never the token.
    log.info({ jobId, outcome, outbox: sent.outboxFile, linkExpiresAt: message.link?.expiresAt.toISOString() }, 'email written to the outbox');
  } else {
    log.info({ jobId, outcome, messageId: sent.messageId }, 'email sent');
  }
  return { jobId, outcome, status: 'sent', messageId: sent.messageId };
}
