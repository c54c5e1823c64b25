import { randomBytes } from 'node:crypto';
import type { Db } from './db';
import { isDuplicateKey } from './db';

/**
 * Leases in the database, shared by every process: a lock is a row that its holder renews; one
 * whose holder died (kill -9) lapses after `leaseMs`, and a waiter may ask the holder to let go.
 */
export interface Lease {
  name: string;
  token: string;
}

/** Takes the lock if it is free or lapsed; undefined if someone else holds it. */
export async function tryLock(db: Db, name: string, leaseMs: number): Promise<Lease | undefined> {
  const token = randomBytes(12).toString('hex');
  const now = Date.now();
  try {
    await db('locks').insert({ name, token, expires_at: now + leaseMs, release_requested: false });
    return { name, token };
  } catch (err) {
    if (!isDuplicateKey(err)) throw err;
  }
  const taken = await db('locks').where({ name }).andWhere('expires_at', '<', now)
    .update({ token, expires_at: now + leaseMs, release_requested: false });
  return taken === 1 ? { name, token } : undefined;
}

/** Extends the lease; says whether it is still held and whether a waiter asked for it. */
export async function renewLock(db: Db, lease: Lease, leaseMs: number): Promise<{ held: boolean; releaseRequested: boolean }> {
  await db('locks').where({ name: lease.name, token: lease.token }).update({ expires_at: Date.now() + leaseMs });
  const row = await db('locks').where({ name: lease.name }).first();
  return { held: row?.token === lease.token, releaseRequested: Boolean(row?.release_requested) };
}

/** Asks the holder of `name` to release it at its next renewal. */
export async function askRelease(db: Db, name: string): Promise<void> {
  await db('locks').where({ name }).update({ release_requested: true });
}

export async function unlock(db: Db, lease: Lease): Promise<void> {
  await db('locks').where({ name: lease.name, token: lease.token }).delete();
}
