import { randomBytes } from 'node:crypto';
import type { Config } from '../core/config';
import { TooManyRequestsError } from '../core/errors';
import { log } from '../core/log';
import { videoUploaded } from '../messaging/events';
import { publishEvent, type Broker } from '../messaging/queue';
import type { Db, Trx } from '../storage/db';
import { findJob, type Job } from './jobs';
import { refuseWhenDailyQuotaSpent } from './quotas';

/**
 * Fair scheduling of each user's jobs (docs/scheduling.md). The database keeps every user's queue;
 * only a job whose turn has come (`released_at`) is published to `video`, at most MAX_JOBS_IN_FLIGHT
 * of one user's at a time, and the next one when one of theirs ends. So the shared `video` queue
 * holds a few jobs of each user, never one user's batch of 50, and another user's upload is published
 * behind at most those. Every step that adds to a user's counts (a place in the queue, a turn) runs
 * under that user's lock row, in one transaction, so replicas never exceed a bound between them.
 */

const unfinished = ['queued', 'converting'];
/** What holds a place in the owner's queue: also a job still importing its video from a URL (imports.ts). */
const placed = ['importing', ...unfinished];

/** How long a refused upload is told to wait when its owner's queue is full (jobs end in about that time). */
const queueFullRetrySeconds = 10;

class NoOwnerRow extends Error {}

/**
 * Runs `fn` in a transaction that holds the owner's row in `owner_queues`: an UPDATE takes the row
 * lock on MySQL, and on SQLite the write lock, before anything is read, so what `fn` counts is what
 * the previous holder committed.
 */
export async function withOwnerLock<T>(db: Db, ownerId: string, fn: (trx: Trx) => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await db.transaction(async (trx) => {
        const locked = await trx('owner_queues').where({ owner_id: ownerId }).update({ locked_at: Date.now() });
        if (locked === 0) throw new NoOwnerRow();
        return fn(trx);
      });
    } catch (err) {
      if (!(err instanceof NoOwnerRow) || attempt > 0) throw err;
      await db('owner_queues').insert({ owner_id: ownerId, locked_at: Date.now() }).onConflict('owner_id').ignore();
    }
  }
}

/** The owner's jobs importing, waiting or converting, how many of them have had their turn, and resumable uploads not yet jobs. */
export async function countQueue(db: Db, ownerId: string, now = Date.now()): Promise<{ jobs: number; released: number; uploads: number }> {
  const jobs = (await db('jobs').where({ owner_id: ownerId }).whereIn('status', placed)
    .select(db.raw('count(*) as n'), db.raw('sum(case when released_at is null then 0 else 1 end) as released')).first()) as { n: unknown; released: unknown };
  // An unfinished upload holds its place from its creation, so finishing six cannot pass the bound.
  const uploads = (await db('uploads as u').leftJoin('jobs as j', 'j.id', 'u.id')
    .where('u.owner_id', ownerId).whereNull('u.job_id').whereNull('j.id').andWhere('u.expires_at', '>', now)
    .count({ n: '*' }).first()) as { n: unknown };
  return { jobs: Number(jobs.n ?? 0), released: Number(jobs.released ?? 0), uploads: Number(uploads.n ?? 0) };
}

/** 429 naming MAX_JOBS_QUEUED when the owner has that many jobs and uploads waiting already. */
export async function refuseWhenQueueFull(db: Db, ownerId: string, config: Pick<Config, 'quotas'>, now = Date.now()): Promise<void> {
  const { jobs, uploads } = await countQueue(db, ownerId, now);
  const limit = config.quotas.jobsQueued;
  if (jobs + uploads >= limit) {
    throw new TooManyRequestsError(queueFullRetrySeconds, `your queue is full: ${limit} jobs waiting or converting (MAX_JOBS_QUEUED); upload more as they finish`);
  }
}

/**
 * Takes a place in the owner's queue in one step: under the owner's lock, refuses when the queue is
 * full or the day's conversion seconds are spent, else runs `insert` (the job or the upload row).
 * `reserved`: the place was taken when the resumable upload was created, so it is not counted again.
 * Returns what `insert` returned and the jobs whose turn came (to publish after the commit).
 */
export async function takePlace<T>(db: Db, ownerId: string, config: Pick<Config, 'quotas'>, insert: (trx: Trx) => Promise<T>, opts: { reserved?: boolean } = {}): Promise<{ value: T; released: string[] }> {
  return withOwnerLock(db, ownerId, async (trx) => {
    const now = Date.now();
    if (!opts.reserved) {
      await refuseWhenQueueFull(trx, ownerId, config, now);
      await refuseWhenDailyQuotaSpent(trx, ownerId, config, now);
    }
    const value = await insert(trx);
    return { value, released: await releaseDue(trx, ownerId, config, now) };
  });
}

/** Gives the owner's oldest waiting jobs their turn, as many as MAX_JOBS_IN_FLIGHT leaves free. Under the owner's lock. */
async function releaseDue(trx: Trx, ownerId: string, config: Pick<Config, 'quotas'>, now: number): Promise<string[]> {
  const { released } = await countQueue(trx, ownerId, now);
  const free = config.quotas.jobsInFlight - released;
  if (free <= 0) return [];
  const ids: string[] = await trx('jobs').where({ owner_id: ownerId, status: 'queued' }).whereNull('released_at')
    .orderBy([{ column: 'created_at' }, { column: 'id' }]).limit(free).pluck('id');
  if (ids.length > 0) await trx('jobs').whereIn('id', ids).update({ released_at: now, updated_at: now });
  return ids;
}

export interface TurnDeps {
  db: Db;
  broker: Broker;
  config: Pick<Config, 'quotas'>;
}

/**
 * Publishes the `video.uploaded` of jobs whose turn has come. One that cannot be published waits
 * again (its turn is handed back, so no other job's turn is lost to it) and the error goes on: the
 * caller answers 503 and its retry, or the reconciler, releases it anew.
 */
export async function publishTurns(deps: Pick<TurnDeps, 'db' | 'broker'>, ids: string[]): Promise<void> {
  for (const [i, id] of ids.entries()) {
    const job = await findJob(deps.db, id);
    if (!job?.videoBlobId) continue;
    try {
      await publishEvent(deps.broker, 'video', videoUploadedOf(job));
    } catch (err) {
      await deps.db('jobs').whereIn('id', ids.slice(i)).where({ status: 'queued' }).whereNull('claim_token')
        .update({ released_at: null }).catch(() => undefined);
      throw err;
    }
  }
}

/** After one of the owner's jobs ended (or was deleted): the next ones in their queue get their turn. */
export async function releaseNext(deps: TurnDeps, ownerId: string): Promise<number> {
  const released = await withOwnerLock(deps.db, ownerId, (trx) => releaseDue(trx, ownerId, deps.config, Date.now()));
  await publishTurns(deps, released);
  if (released.length > 0) log.info({ owner: ownerId, jobs: released }, 'turn came');
  return released.length;
}

/** Owners with jobs waiting for their turn (the reconciler checks that none waits behind a free slot). */
export async function ownersWaiting(db: Db, limit: number): Promise<string[]> {
  return db('jobs').distinct('owner_id').where({ status: 'queued' }).whereNull('released_at').limit(limit).pluck('owner_id');
}

/** The `video.uploaded` event of a job, always the same for one job (same id, same data). */
export function videoUploadedOf(job: Job) {
  return videoUploaded(
    { jobId: job.id, owner: job.ownerId, email: job.ownerEmail, filename: job.filename, videoBlobId: job.videoBlobId!, options: job.options },
    `${job.id}.uploaded`,
  );
}

/**
 * Claims a job for one conversion: whose turn has come, not ended, and not claimed by a live
 * converter (a lease that its holder renews; a crashed holder's lapses). Also moves it to
 * `converting`. Returns the claim's token, or undefined when it cannot be had.
 */
export async function claimJob(db: Db, id: string, leaseMs: number, now = Date.now()): Promise<string | undefined> {
  const token = randomBytes(12).toString('hex');
  const changed = await db('jobs').where({ id }).whereIn('status', unfinished).whereNotNull('released_at')
    .andWhere((w) => w.whereNull('claim_expires_at').orWhere('claim_expires_at', '<', now))
    .update({ status: 'converting', claim_token: token, claim_expires_at: now + leaseMs, progress: 0, position_seconds: 0, updated_at: now });
  return changed === 1 ? token : undefined;
}

/** Extends the claim; false when it was lost (it lapsed and another converter took the job). */
export async function renewClaim(db: Db, id: string, token: string, leaseMs: number): Promise<boolean> {
  return (await db('jobs').where({ id, claim_token: token }).update({ claim_expires_at: Date.now() + leaseMs })) === 1;
}

/** True when the job's claim has gone unrenewed for over half its lease: its converter has likely died. */
export async function claimLooksAbandoned(db: Db, id: string, leaseMs: number, now = Date.now()): Promise<boolean> {
  const row = (await db('jobs').where({ id }).first('claim_expires_at')) as { claim_expires_at: unknown } | undefined;
  return row?.claim_expires_at != null && Number(row.claim_expires_at) - now < leaseMs / 2;
}

/** Lets go of a claim at once (a conversion that will be retried), so the retry need not wait for it to lapse. */
export async function dropClaim(db: Db, id: string, token: string): Promise<void> {
  await db('jobs').where({ id, claim_token: token }).update({ claim_expires_at: null });
}

/**
 * The early refusal, before an upload stores a byte: a full queue or a spent day is 429 at once. Not
 * the bound itself (another replica may take the last place meanwhile): takePlace is.
 */
export async function checkQuotas(db: Db, ownerId: string, config: Pick<Config, 'quotas'>): Promise<void> {
  await refuseWhenQueueFull(db, ownerId, config);
  await refuseWhenDailyQuotaSpent(db, ownerId, config);
}
