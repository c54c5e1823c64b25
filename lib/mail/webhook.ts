// One webhook attempt: the Standard Webhooks signed POST of a job's outcome to the upload's
// callbackUrl, within a deadline, never to a private address unless WEBHOOK_ALLOW_PRIVATE. When
// attempts are made, and how they are recorded, is webhook-outbox.ts's.
import { createHmac } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { mintDownloadLink } from '../auth/links';
import { getWebhookSecret } from '../auth/webhook-secrets';
import { guardedLookup, PrivateAddressError } from '../core/callback-url';
import type { Config } from '../core/config';
import type { Job } from '../pipeline/jobs';
import type { Db } from '../storage/db';

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

/**
 * One POST; resolves to the status code, rejects on a network failure, a refused address, or when
 * `timeoutMs` has passed since it began (name lookup, connection, answer and all: a receiver that
 * trickles bytes is cut off too).
 */
function post(url: string, body: string, headers: Record<string, string>, opts: { allowPrivate: boolean; timeoutMs: number }): Promise<number> {
  const target = new URL(url);
  const client = target.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.request(target, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': 'video2mp3-webhook/1' },
      lookup: guardedLookup(opts.allowPrivate),
    }, (res) => {
      res.resume(); // the receiver's body is not ours to read
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    const deadline = setTimeout(() => req.destroy(new Error(`no answer within ${opts.timeoutMs / 1000} s`)), opts.timeoutMs);
    req.on('close', () => clearTimeout(deadline));
    req.on('error', reject);
    req.end(body);
  });
}

/** How an attempt ended: `retry` false when no later attempt can do better (a 4xx, a refused address). */
export type AttemptResult =
  | { ok: true; responseStatus: number }
  | { ok: false; retry: boolean; responseStatus?: number; error: string };

/**
 * Sends the outcome webhook of `job` once, signed with its owner's secret. The id is the same on
 * every attempt (`<jobId>.<succeeded|failed>`), so receivers can drop repeats; the timestamp and the
 * download link are fresh.
 */
export async function sendWebhook(db: Db, job: Job, config: Readonly<Config>): Promise<AttemptResult> {
  const id = `${job.id}.${job.status === 'done' ? 'succeeded' : 'failed'}`;
  const timestamp = Math.floor(Date.now() / 1000);
  const body = JSON.stringify({ ...webhookBody(job, config), timestamp: new Date(timestamp * 1000).toISOString() });
  const secret = await getWebhookSecret(db, job.ownerId);
  const headers = { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signWebhook(secret, id, timestamp, body) };
  try {
    const status = await post(job.callbackUrl!, body, headers, config.webhooks);
    if (status >= 200 && status < 300) return { ok: true, responseStatus: status };
    // The receiver says the request itself is wrong (gone, not found, forbidden): asking again won't help.
    const retry = !(status >= 400 && status < 500 && status !== 408 && status !== 429);
    return { ok: false, retry, responseStatus: status, error: `the receiver answered ${status}` };
  } catch (err) {
    return { ok: false, retry: !(err instanceof PrivateAddressError), error: (err as Error).message };
  }
}
