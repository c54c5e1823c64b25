// The webhook of a job outcome: one signed POST to the upload's callbackUrl, once per job however
// often the event arrives (the webhook_deliveries row decides), retried through the event source
// while the receiver is down, and never to a private address unless WEBHOOK_ALLOW_PRIVATE.
import { createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { mintDownloadLink } from '../auth/links';
import { getWebhookSecret } from '../auth/webhook-secrets';
import { guardedLookup, PrivateAddressError } from '../core/callback-url';
import { getConfig, type Config } from '../core/config';
import { UnavailableError } from '../core/errors';
import { log } from '../core/log';
import { findJob, type Job } from '../pipeline/jobs';
import { isDuplicateKey, type Db } from '../storage/db';
import { outcomeOf, type OutcomeEvent } from './compose';

/** delivered: the receiver answered 2xx now; duplicate: an earlier delivery settled it; failed/rejected: given up, recorded. */
export type WebhookStatus = 'delivered' | 'duplicate' | 'failed' | 'rejected';

/** Attempts before a receiver that keeps failing is given up on (each one is an event redelivery). */
export const maxWebhookAttempts = 5;
const requestTimeoutMs = 10_000;
/** A 'sending' row older than this belongs to a crashed delivery and may be taken over. */
const leaseMs = requestTimeoutMs + 10_000;

/** Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` keyed by the secret's bytes. */
export function signWebhook(secret: string, id: string, timestamp: number, body: string): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
}

/** The JSON a receiver gets, from the job row (never from the event). */
export function webhookBody(job: Job, config: Readonly<Config>) {
  const { id: jobId, filename } = job;
  if (job.status === 'done') {
    const link = mintDownloadLink(jobId, config);
    return {
      type: 'job.done',
      jobId,
      status: 'done',
      filename,
      mp3: {
        url: `${config.downloadUrl}/jobs/${jobId}/mp3`,
        link: link.url,
        linkExpiresAt: link.expiresAt.toISOString(),
        size: job.mp3Bytes ?? 0,
        durationSeconds: job.durationSeconds ?? 0,
      },
    };
  }
  return { type: 'job.failed', jobId, status: 'failed', filename, error: job.error ?? 'The file could not be converted.' };
}

/** Claims the delivery: false when it is settled already; throws (retry later) while another holds it. */
async function claim(db: Db, jobId: string): Promise<number | false> {
  const now = Date.now();
  try {
    await db('webhook_deliveries').insert({ job_id: jobId, status: 'sending', attempts: 1, created_at: now, updated_at: now });
    return 1;
  } catch (err) {
    if (!isDuplicateKey(err)) throw err;
  }
  const row = await db('webhook_deliveries').where({ job_id: jobId }).first();
  if (!row || ['delivered', 'failed', 'rejected'].includes(row.status as string)) return false;
  if (row.status === 'sending' && now - Number(row.updated_at) < leaseMs) throw new UnavailableError('webhook (another delivery is sending it)');
  const attempts = Number(row.attempts) + 1;
  const taken = await db('webhook_deliveries').where({ job_id: jobId, updated_at: row.updated_at })
    .update({ status: 'sending', attempts, updated_at: now });
  if (taken !== 1) throw new UnavailableError('webhook (another delivery took it)');
  return attempts;
}

/** One POST; resolves to the status code, rejects on a network failure or a refused address. */
function post(url: string, body: string, headers: Record<string, string>, allowPrivate: boolean): Promise<number> {
  const target = new URL(url);
  const client = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.request(target, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': 'video2mp3-webhook/1' },
      lookup: guardedLookup(allowPrivate),
      timeout: requestTimeoutMs,
    }, (res) => {
      res.resume(); // the receiver's body is not ours to read
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${requestTimeoutMs / 1000} s`)));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Delivers the outcome webhook of a job, if its upload gave a callbackUrl. The event is only a hint
 * (anyone reaching the receiver can post one): the job row says whether it really ended that way,
 * where the callback goes, and what it says. Returns normally when delivered, already settled, given
 * up (recorded) or not applicable; throws UnavailableError (503, the source redelivers with backoff)
 * while the receiver fails and attempts are left.
 */
export async function deliverWebhook(db: Db, hint: OutcomeEvent, config: Readonly<Config> = getConfig()): Promise<WebhookStatus | undefined> {
  const job = await findJob(db, hint.data.jobId);
  const wanted = outcomeOf(hint) === 'succeeded' ? 'done' : 'failed';
  if (!job?.callbackUrl || job.status !== wanted) return undefined;
  const { id: jobId, ownerId: owner, callbackUrl } = job;
  const attempt = await claim(db, jobId);
  if (attempt === false) return 'duplicate';
  const settle = (status: string, fields: { response_status?: number; error?: string } = {}) =>
    db('webhook_deliveries').where({ job_id: jobId }).update({ status, ...fields, updated_at: Date.now() });

  const id = `${jobId}.${outcomeOf(hint)}`;
  const timestamp = Math.floor(Date.now() / 1000);
  const body = JSON.stringify({ ...webhookBody(job, config), timestamp: new Date(timestamp * 1000).toISOString() });
  const secret = await getWebhookSecret(db, owner);
  const headers = { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signWebhook(secret, id, timestamp, body) };

  let failure: string;
  try {
    const status = await post(callbackUrl, body, headers, config.webhooks.allowPrivate);
    if (status >= 200 && status < 300) {
      await settle('delivered', { response_status: status, error: undefined });
      log.info({ jobId, status, attempt }, 'webhook delivered');
      return 'delivered';
    }
    if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
      await settle('rejected', { response_status: status, error: `the receiver answered ${status}` });
      log.warn({ jobId, status }, 'webhook rejected by the receiver; not retrying');
      return 'rejected';
    }
    failure = `the receiver answered ${status}`;
  } catch (err) {
    if (err instanceof PrivateAddressError) {
      await settle('rejected', { error: err.message });
      log.warn({ jobId, reason: err.message }, 'webhook refused: private address');
      return 'rejected';
    }
    failure = (err as Error).message;
  }
  if (attempt >= maxWebhookAttempts) {
    await settle('failed', { error: failure });
    log.warn({ jobId, attempt, reason: failure }, 'webhook failed; giving up');
    return 'failed';
  }
  await settle('pending', { error: failure });
  log.warn({ jobId, attempt, reason: failure }, 'webhook failed; the event will be redelivered');
  throw new UnavailableError('the webhook receiver');
}
