import type { Config } from '../core/config';
import { TooManyRequestsError } from '../core/errors';
import type { Db } from '../storage/db';

const dayMs = 24 * 3600 * 1000;

/** Seconds of media converted for the owner in the last 24 h, and when the oldest of them leaves that window. */
async function convertedToday(db: Db, ownerId: string, now: number, exceptJobId?: string) {
  const q = db('jobs').where({ owner_id: ownerId, status: 'done' }).andWhere('created_at', '>', now - dayMs);
  if (exceptJobId) q.andWhereNot({ id: exceptJobId });
  const row = (await q.sum({ seconds: 'duration_seconds' }).min({ oldest: 'created_at' }).first()) as { seconds: unknown; oldest: unknown } | undefined;
  return { seconds: Number(row?.seconds ?? 0), oldest: row?.oldest == null ? now : Number(row.oldest) };
}

/**
 * Per-user quotas, checked when an upload arrives: at most MAX_JOBS_IN_FLIGHT jobs importing, queued
 * or converting, and at most MAX_CONVERSION_SECONDS_PER_DAY seconds of media converted in 24 h. Over
 * either, 429 with Retry-After and a message naming the quota.
 */
export async function checkQuotas(db: Db, ownerId: string, config: Pick<Config, 'quotas'>, now = Date.now()): Promise<void> {
  const { jobsInFlight, conversionSecondsPerDay } = config.quotas;
  const inFlight = Number((await db('jobs').where({ owner_id: ownerId }).whereIn('status', ['importing', 'queued', 'converting']).count({ n: '*' }))[0]?.n ?? 0);
  if (inFlight >= jobsInFlight) {
    throw new TooManyRequestsError(30, `quota of ${jobsInFlight} jobs in flight reached: wait until one of your conversions ends`);
  }
  const today = await convertedToday(db, ownerId, now);
  if (today.seconds >= conversionSecondsPerDay) {
    throw new TooManyRequestsError((today.oldest + dayMs - now) / 1000,
      `daily conversion quota of ${conversionSecondsPerDay} seconds of media used up (${Math.round(today.seconds)} s in the last 24 h)`);
  }
}

/** Seconds of media the owner may still have converted today, not counting `jobId` itself. */
export async function remainingConversionSeconds(db: Db, ownerId: string, jobId: string, config: Pick<Config, 'quotas'>): Promise<number> {
  const today = await convertedToday(db, ownerId, Date.now(), jobId);
  return Math.max(0, config.quotas.conversionSecondsPerDay - today.seconds);
}
