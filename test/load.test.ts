// The short version of `npm run load` (load/): two replicas of every bundled function behind balancers,
// the real receive adapters, MariaDB, RabbitMQ, FerretDB and an SMTP server; a few users uploading
// batches by POST and by tus (PATCHes alternating between replicas), one whose webhook always fails,
// and a burst of wrong passwords. Every invariant of the load test must hold.
import { describe, expect, it } from 'vitest';
import { runLoad } from '../load/run';
import { adapterAvailable } from './support/adapter';
import { backends } from './support/stack';

const services = backends().find((b) => b.name === 'services');
const enabled = services !== undefined && adapterAvailable();

describe.runIf(enabled)('npm run load, short', () => {
  it('when users upload batches at two replicas of everything, then no job is lost or doubled and every limit holds', async () => {
    const result = await runLoad({ replicas: 2, users: 2, batch: 3, hostileWebhookUsers: 1, passwordBurst: 20, timeLimitSeconds: 240 });
    const broken = result.invariants.filter((i) => !i.held).map((i) => `${i.name}: ${i.detail}`);
    expect(broken).toEqual([]);
    expect(result.jobs.done).toBe(9);
    expect(result.jobs.perMinute).toBeGreaterThan(0);
    expect(result.queueWait.every((q) => q.jobs === 3 && Number.isFinite(q.p99))).toBe(true);
  }, 420_000);
});
