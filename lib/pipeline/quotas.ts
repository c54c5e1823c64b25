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
 * 429 with Retry-After and the reset time once the owner's MAX_CONVERSION_SECONDS_PER_DAY are spent:
 * checked before an upload stores a byte, and again in the step that takes its place in the queue.
 */
export async function refuseWhenDailyQuotaSpent(db: Db, ownerId: string, config: Pick<Config, 'quotas'>, now = Date.now()): Promise<void> {
  const { conversionSecondsPerDay } = config.quotas;
  const today = await convertedToday(db, ownerId, now);
  if (today.seconds >= conversionSecondsPerDay) {
    const resetsAt = today.oldest + dayMs;
    throw new TooManyRequestsError((resetsAt - now) / 1000,
      `daily conversion quota of ${conversionSecondsPerDay} seconds of media (MAX_CONVERSION_SECONDS_PER_DAY) used up (${Math.round(today.seconds)} s in the last 24 h); it resets at ${new Date(resetsAt).toISOString()}`);
  }
}

/** Seconds of media the owner may still have converted today, not counting `jobId` itself. */
export async function remainingConversionSeconds(db: Db, ownerId: string, jobId: string, config: Pick<Config, 'quotas'>): Promise<number> {
  const today = await convertedToday(db, ownerId, Date.now(), jobId);
  return Math.max(0, config.quotas.conversionSecondsPerDay - today.seconds);
}
