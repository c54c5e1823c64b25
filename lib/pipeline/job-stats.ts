import type { Config } from '../core/config';
import { recordJobStats, type JobStats } from '../core/metrics';
import { topology, type Broker } from '../messaging/queue';
import type { Db } from '../storage/db';

export interface JobStatsDeps {
  db: Db;
  broker: Broker;
  config: Pick<Config, 'maintenance'>;
}

/**
 * Measures the job gauges (jobs queued and converting, the oldest queued job, dead letters) for
 * the metrics. It runs in the scheduled maintenance, one delivery per tick for the whole deployment,
 * so the database and the broker are asked once a tick, whatever the number of replicas or scrapes
 * (docs/operations.md, "Job gauges"). The replica that ran it exposes the result for one and a half
 * intervals.
 */
export async function measureJobs(deps: JobStatsDeps): Promise<JobStats> {
  const rows: { status: string; count: number | string; oldest: number | string | null }[] = await deps.db('jobs')
    .select('status').count({ count: '*' }).min({ oldest: 'created_at' })
    .whereIn('status', ['queued', 'converting']).groupBy('status');
  const of = (status: string) => rows.find((r) => r.status === status);
  const oldest = of('queued')?.oldest;
  const deadLetters: Record<string, number> = {};
  for (const q of topology.queues) deadLetters[q.deadLetterQueue] = await deps.broker.depth(q.deadLetterQueue);
  const stats: JobStats = {
    queued: Number(of('queued')?.count ?? 0),
    converting: Number(of('converting')?.count ?? 0),
    oldestQueuedAt: oldest === null || oldest === undefined ? undefined : Number(oldest),
    deadLetters,
  };
  recordJobStats(stats, deps.config.maintenance.intervalMs * 1.5);
  return stats;
}
