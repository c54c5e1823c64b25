// When a job's webhook is sent, and what became of it (docs/webhooks.md). notify records the
// delivery as due (one row per job, however often the event arrives) and makes at most one attempt,
// bounded by the per-attempt timeout, in its own request; every later attempt is made by the webhook
// tick, on the schedule of WEBHOOK_RETRY_SCHEDULE. So a failing or silent receiver costs the `mp3`
// delivery slot one attempt's timeout at most, and never sleeps in it.
import { getConfig, type Config } from '../core/config';
import { log } from '../core/log';
import { webhookDeliveries } from '../core/metrics';
import { withSpan } from '../core/tracing';
import { findJob, type Job } from '../pipeline/jobs';
import { isDuplicateKey, type Db } from '../storage/db';
import { outcomeOf, type OutcomeEvent } from './compose';
import { sendWebhook, type AttemptResult } from './webhook';

/** What notify's own attempt came to: sent, left for a tick, given up, or nothing to do (settled, not due, or another claimer's). */
export type WebhookNow = 'delivered' | 'scheduled' | 'failed' | 'duplicate';

export type WebhookState = 'pending' | 'delivered' | 'failed';

/** A job's webhook as its status document shows it. */
export interface WebhookView {
  state: WebhookState;
  attempts: number;
  nextAttemptAt?: string;
  lastAttemptAt?: string;
  lastResponseStatus?: number;
  lastError?: string;
}

type WebhookConfig = Pick<Config, 'webhooks'>;

/** Deliveries one tick takes on, and how many of their attempts run at once: a tick lasts at most 5 timeouts. */
const tickBatch = 50;
const tickParallelism = 10;

const maxAttempts = (config: WebhookConfig) => 1 + config.webhooks.retryScheduleMs.length;

/**
 * How long a claimed attempt belongs to its claimer. An attempt ends within the timeout; a claim
 * older than this was a claimer that died, and the next tick makes the next attempt.
 */
const claimMs = (config: WebhookConfig) => config.webhooks.timeoutMs * 2 + 10_000;

/** Records the job's webhook as due now, once: a repeated event finds the row there. */
async function schedule(db: Db, jobId: string): Promise<void> {
  const now = Date.now();
  try {
    await db('webhook_deliveries').insert({ job_id: jobId, status: 'pending', attempts: 0, next_attempt_at: now, created_at: now, updated_at: now });
  } catch (err) {
    if (!isDuplicateKey(err)) throw err;
  }
}

/**
 * Takes attempt n of a due delivery with one update conditional on the attempt count read, so of two
 * replicas (or notify and a tick) exactly one gets each attempt. Returns n, or undefined when the
 * delivery is settled, not due yet, or someone else took it. A lapsed claim on the last attempt
 * gives up instead.
 */
async function claim(db: Db, jobId: string, config: WebhookConfig): Promise<number | undefined> {
  const now = Date.now();
  const row = await db('webhook_deliveries').where({ job_id: jobId }).first();
  if (!row || !['pending', 'sending'].includes(row.status as string) || row.next_attempt_at === null || Number(row.next_attempt_at) > now) return undefined;
  const seen = { job_id: jobId, status: row.status as string, attempts: Number(row.attempts) };
  const attempt = seen.attempts + 1;
  if (attempt > maxAttempts(config)) {
    await db('webhook_deliveries').where(seen).update({ status: 'failed', next_attempt_at: null, error: 'the last attempt did not finish', updated_at: now });
    return undefined;
  }
  const taken = await db('webhook_deliveries').where(seen).where('next_attempt_at', '<=', now)
    .update({ status: 'sending', attempts: attempt, next_attempt_at: now + claimMs(config), updated_at: now });
  if (taken !== 1) return undefined;
  await db('webhook_attempts').insert({ job_id: jobId, attempt, started_at: now });
  return attempt;
}

/** Records attempt n's result, and what comes next: delivered, the next attempt's time, or given up. */
async function record(db: Db, jobId: string, attempt: number, result: AttemptResult, config: WebhookConfig): Promise<WebhookNow> {
  const now = Date.now();
  const fields = { response_status: result.responseStatus ?? null, error: result.ok ? null : result.error.slice(0, 1000) };
  await db('webhook_attempts').where({ job_id: jobId, attempt }).update({ finished_at: now, ...fields });
  const wait = !result.ok && result.retry ? config.webhooks.retryScheduleMs[attempt - 1] : undefined;
  const status = result.ok ? 'delivered' : wait === undefined ? 'failed' : 'pending';
  await db('webhook_deliveries').where({ job_id: jobId, attempts: attempt })
    .update({ status, next_attempt_at: wait === undefined ? null : now + wait, ...fields, updated_at: now });
  if (result.ok) log.info({ jobId, attempt, status: result.responseStatus }, 'webhook delivered');
  else if (status === 'failed') log.warn({ jobId, attempt, reason: result.error }, 'webhook failed; giving up');
  else log.info({ jobId, attempt, reason: result.error, retryInMs: wait }, 'webhook failed; retrying on a later tick');
  return status === 'pending' ? 'scheduled' : status;
}

/** Makes the next attempt of a job's webhook if it is due and this caller wins the claim. */
async function attemptDue(db: Db, jobId: string, config: Readonly<Config>): Promise<WebhookNow> {
  const attempt = await claim(db, jobId, config);
  if (attempt === undefined) return 'duplicate';
  // The job row, read again at each attempt, says what the receiver gets and whether it still should.
  const job = await findJob(db, jobId);
  const result: AttemptResult = job?.callbackUrl && (job.status === 'done' || job.status === 'failed')
    ? await withSpan('webhook', { kind: 'client', attributes: { 'video2mp3.job_id': jobId, 'video2mp3.webhook_attempt': attempt } }, () => sendWebhook(db, job, config))
    : { ok: false, retry: false, error: job ? `the job is ${job.status}; its outcome is no longer sent` : 'the job was deleted' };
  const next = await record(db, jobId, attempt, result, config);
  const rejected = !result.ok && !result.retry;
  webhookDeliveries.inc({ outcome: next === 'delivered' ? 'delivered' : next === 'scheduled' ? 'retry' : rejected ? 'rejected' : 'failed' });
  return next;
}

/**
 * notify's part, after the email: if the job (as the database says, the event being only a hint)
 * ended the way the event claims and has a callbackUrl, records its webhook as due and makes the
 * first attempt now. Returns undefined when there is no webhook to send.
 */
export async function startWebhook(db: Db, hint: OutcomeEvent, config: Readonly<Config> = getConfig()): Promise<WebhookNow | undefined> {
  const job = await findJob(db, hint.data.jobId);
  if (!job?.callbackUrl || job.status !== (outcomeOf(hint) === 'succeeded' ? 'done' : 'failed')) return undefined;
  await schedule(db, job.id);
  return attemptDue(db, job.id, config);
}

/**
 * The webhook tick (a PingSource every minute on Knative, a timer on the local stack): makes the
 * attempts that are due, the longest-waiting first, a bounded number per tick.
 */
export async function runWebhookTick(db: Db, config: Readonly<Config> = getConfig()): Promise<Record<WebhookNow, number>> {
  const due = await db('webhook_deliveries').whereIn('status', ['pending', 'sending']).where('next_attempt_at', '<=', Date.now())
    .orderBy('next_attempt_at').limit(tickBatch).pluck('job_id') as string[];
  const counts: Record<WebhookNow, number> = { delivered: 0, scheduled: 0, failed: 0, duplicate: 0 };
  let next = 0;
  const worker = async () => {
    while (next < due.length) counts[await attemptDue(db, due[next++]!, config)]++;
  };
  await Promise.all(Array.from({ length: Math.min(tickParallelism, due.length) }, worker));
  return counts;
}

const iso = (ms: unknown) => new Date(Number(ms)).toISOString();

/** The webhook state of each of `jobs` that has a callbackUrl, by job id. */
export async function webhookViews(db: Db, jobs: Job[]): Promise<Map<string, WebhookView>> {
  const ids = jobs.filter((j) => j.callbackUrl).map((j) => j.id);
  const views = new Map<string, WebhookView>(ids.map((id) => [id, { state: 'pending', attempts: 0 }]));
  if (ids.length === 0) return views;
  const [rows, attempts] = await Promise.all([
    db('webhook_deliveries').whereIn('job_id', ids),
    db('webhook_attempts').whereIn('job_id', ids).orderBy('attempt', 'desc'),
  ]);
  const lastStart = new Map<string, unknown>();
  for (const a of attempts) if (!lastStart.has(a.job_id as string)) lastStart.set(a.job_id as string, a.started_at);
  for (const r of rows) {
    const state: WebhookState = r.status === 'delivered' ? 'delivered' : r.status === 'failed' || r.status === 'rejected' ? 'failed' : 'pending';
    views.set(r.job_id as string, {
      state,
      attempts: Number(r.attempts),
      ...(r.status === 'pending' && r.next_attempt_at !== null ? { nextAttemptAt: iso(r.next_attempt_at) } : {}),
      ...(lastStart.has(r.job_id as string) ? { lastAttemptAt: iso(lastStart.get(r.job_id as string)) } : {}),
      ...(r.response_status !== null ? { lastResponseStatus: Number(r.response_status) } : {}),
      ...(r.error ? { lastError: r.error as string } : {}),
    });
  }
  return views;
}
