import type { Config } from '../core/config';
import { log } from '../core/log';
import { jobsFinished, reconcilerRedrives } from '../core/metrics';
import { publishEvent, type Broker } from '../messaging/queue';
import type { Db } from '../storage/db';
import { failConversion, failImport, findJob } from './jobs';
import { publishOutcome } from './outcomes';
import { redriveDeadLetters } from './redrive';
import { ownersWaiting, releaseNext, videoUploadedOf } from './scheduling';

/**
 * The database, not the queue, is the record of pending work. An event can be lost in many ways —
 * dead-lettered after an outage longer than the source's retries, published by a process that died
 * before it could, held by an in-process queue that exited — and each one leaves a job that should be
 * moving and is not. The reconciler finds those jobs and publishes their event again; every handler is
 * idempotent (keyed on the job), so a repeat of an event that was merely slow is harmless.
 */
export interface ReconcileDeps {
  db: Db;
  broker: Broker;
  config: Pick<Config, 'maintenance' | 'quotas' | 'timeouts'>;
}

export interface ReconcileOptions {
  /**
   * The process that held the in-process queue has just restarted: every pending event was lost with
   * it, and no other process can be working on a job or sending an email. So every job that is not
   * finished is due now, and a notification left `sending` is released at once.
   */
  restarted?: boolean;
  now?: number;
}

export interface ReconcileResult {
  /** Jobs importing from a URL whose process died: failed, their partial video left to the retention sweep. */
  imports: number;
  /** Jobs queued or converting whose `video.uploaded` went out again. */
  conversions: number;
  /** Jobs done or failed whose outcome event had never been published. */
  outcomes: number;
  /** Jobs whose outcome was published but whose email is missing or stuck: the event went out again. */
  notifications: number;
  /** Jobs whose turn came because a slot of their owner's was free (a release lost to a crash or a deletion). */
  turns: number;
  /** Dead letters whose job the database says is unfinished, published again (lib/pipeline/redrive.ts). */
  redriven: number;
}

/**
 * At most this many jobs of each kind per tick: a large backlog drains over several ticks. After a
 * restart there is no limit: the in-process queue must hold every pending job again before serving.
 */
const batch = 100;

/**
 * One pass: (1) jobs whose turn has come, queued or converting with no progress for
 * `reconcileAfterMs`, or converting under a claim that lapsed (its converter died or lost the
 * database), get their `video.uploaded` event again; (2) jobs done or failed whose outcome event was never published get
 * it published; (3) jobs whose outcome went out that long ago but have no notification, or one left
 * `sending`, get the outcome event again. Each re-publish moves the job's clock, so a job waiting in a
 * long queue is re-published at most once per period, not on every tick.
 */
export async function reconcile(deps: ReconcileDeps, opts: ReconcileOptions = {}): Promise<ReconcileResult> {
  const { db } = deps;
  const now = opts.now ?? Date.now();
  const cutoff = opts.restarted ? now + 1 : now - deps.config.maintenance.reconcileAfterMs;
  const result: ReconcileResult = { imports: 0, conversions: 0, outcomes: 0, notifications: 0, turns: 0, redriven: 0 };
  const limit = opts.restarted ? Number.MAX_SAFE_INTEGER : batch;

  if (opts.restarted) {
    // The claim's holder died with the process: let the next delivery take it over at once.
    await db('notifications').where({ status: 'sending' }).update({ updated_at: 0 });
    await db('jobs').where({ status: 'converting' }).update({ claim_expires_at: null }); // no converter is left
  }

  // An import runs in the process that started it (imports.ts) and moves its job's clock every
  // second while bytes arrive: one that has not moved for a period died with its process.
  const deadImports: { id: string }[] = await db('jobs').select('id').where({ status: 'importing' }).andWhere('updated_at', '<', cutoff).limit(limit);
  for (const row of deadImports) {
    if (await failImport(db, row.id, 'The import was interrupted (the service restarted); import the URL again.', false)) {
      result.imports++;
      jobsFinished.inc({ outcome: 'failed', reason: 'import' });
    }
  }

  // A lapsed claim is noticed after one lease, not after reconcileAfterMs: its converter is gone.
  const lapsedBefore = now - deps.config.timeouts.convertLeaseMs;
  const stalled: { id: string; updated_at: number }[] = await db('jobs').select('id', 'updated_at')
    .whereIn('status', ['queued', 'converting']).whereNotNull('released_at')
    .andWhere((w) => w.where('updated_at', '<', cutoff)
      .orWhere((l) => l.where('status', 'converting').andWhere('claim_expires_at', '<', now).andWhere('updated_at', '<', lapsedBefore)))
    .andWhere((w) => w.whereNull('claim_expires_at').orWhere('claim_expires_at', '<', now))
    .orderBy('updated_at').limit(limit);
  for (const row of stalled) {
    const job = await findJob(db, row.id);
    if (!job || (job.status !== 'queued' && job.status !== 'converting')) continue;
    if (!job.videoBlobId) {
      // Nothing to convert any more; failing it lets step 2 tell the user.
      if (await failConversion(db, job.id, 'The uploaded video is no longer stored.')) jobsFinished.inc({ outcome: 'failed', reason: 'video-missing' });
      continue;
    }
    await publishEvent(deps.broker, 'video', videoUploadedOf(job));
    // Conditional: a conversion that moved the job meanwhile keeps its own clock.
    await db('jobs').where({ id: job.id, updated_at: row.updated_at }).update({ updated_at: now });
    result.conversions++;
  }

  const unpublished: { id: string }[] = await db('jobs').select('id')
    .whereIn('status', ['done', 'failed']).whereNull('published_at').andWhere('updated_at', '<', cutoff).orderBy('updated_at').limit(limit);
  for (const row of unpublished) {
    const job = await findJob(db, row.id);
    if (!job || job.publishedAt || (job.status !== 'done' && job.status !== 'failed')) continue;
    await publishOutcome(deps, job);
    result.outcomes++;
  }

  // A job has one outcome, so at most one notification row: joining on the job id is enough.
  const unmailed: { id: string }[] = await db('jobs as j').select('j.id')
    .leftJoin('notifications as n', 'n.job_id', 'j.id')
    .whereIn('j.status', ['done', 'failed'])
    .andWhere('j.published_at', '<', cutoff)
    .andWhere((w) => w.whereNull('n.job_id').orWhere((s) => s.where('n.status', 'sending').andWhere('n.updated_at', '<', cutoff)))
    .orderBy('j.published_at').limit(limit);
  for (const row of unmailed) {
    const job = await findJob(db, row.id);
    if (!job) continue;
    await publishOutcome(deps, job); // moves published_at: once per period while the email stays missing
    result.notifications++;
  }

  // Owners with a free slot and jobs waiting: a release lost to a crash, or a deleted job's slot.
  for (const owner of await ownersWaiting(db, batch)) result.turns += await releaseNext(deps, owner);

  // Last, once the database answered everything above: events dead-lettered during an outage.
  result.redriven = await redriveDeadLetters(deps);

  for (const [kind, n] of Object.entries(result)) if (n > 0) reconcilerRedrives.inc({ kind }, n);
  if (Object.values(result).some((n) => n > 0)) log.info({ ...result, restarted: !!opts.restarted }, 'reconciled');
  return result;
}
