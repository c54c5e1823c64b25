import { createHash, randomBytes } from 'node:crypto';
import { isDuplicateKey, type Db } from '../storage/db';

// A feed URL is a bearer credential that podcast apps keep and poll: 256 random bits, URL-safe, and
// only its SHA-256 is stored, so a copy of the database does not open anyone's feed. A fast hash is
// enough for a random secret of this length (there is no dictionary to try).
const tokenPattern = /^[A-Za-z0-9_-]{43}$/;
const hashOf = (token: string) => createHash('sha256').update(token).digest('hex');

export interface Feed {
  ownerId: string;
  createdAt: number;
  /** The version last served (lib/pipeline/feed.ts), and since when. */
  etag: string | null;
  modifiedAt: number;
}

const fromRow = (row: Record<string, unknown>): Feed => ({
  ownerId: row.owner_id as string,
  createdAt: Number(row.created_at),
  etag: (row.etag as string | null) ?? null,
  modifiedAt: Number(row.modified_at),
});

/**
 * Creates the user's feed, or replaces its token (the old URL stops working at once). Returns the
 * token: it is shown to the user now and never again.
 */
export async function rotateFeed(db: Db, ownerId: string): Promise<{ token: string; createdAt: number }> {
  const token = randomBytes(32).toString('base64url');
  const createdAt = Date.now();
  const row = { token_hash: hashOf(token), etag: null, modified_at: createdAt, created_at: createdAt };
  const changed = await db('feeds').where({ owner_id: ownerId }).update(row);
  if (changed === 0) {
    try {
      await db('feeds').insert({ owner_id: ownerId, ...row });
    } catch (err) {
      if (!isDuplicateKey(err)) throw err;
      await db('feeds').where({ owner_id: ownerId }).update(row); // a concurrent first rotate: the later token wins
    }
  }
  return { token, createdAt };
}

/** Revokes the user's feed; true if there was one. */
export async function revokeFeed(db: Db, ownerId: string): Promise<boolean> {
  return (await db('feeds').where({ owner_id: ownerId }).delete()) > 0;
}

/** The user's feed, if they have one (its token cannot be shown again). */
export async function findFeed(db: Db, ownerId: string): Promise<Feed | undefined> {
  const row = await db('feeds').where({ owner_id: ownerId }).first();
  return row ? fromRow(row) : undefined;
}

/** The feed a URL token opens, or undefined for a revoked, rotated or malformed one. */
export async function findFeedByToken(db: Db, token: string): Promise<Feed | undefined> {
  if (!tokenPattern.test(token)) return undefined;
  const row = await db('feeds').where({ token_hash: hashOf(token) }).first();
  return row ? fromRow(row) : undefined;
}

/**
 * Records that the feed now has version `etag`: when it differs from the last one served, the feed's
 * modification time moves to now (at least a second past the last, as Last-Modified counts seconds).
 */
export async function recordFeedVersion(db: Db, feed: Feed, etag: string): Promise<Feed> {
  if (feed.etag === etag) return feed;
  const modifiedAt = Math.max(Date.now(), feed.modifiedAt + 1000);
  await db('feeds').where({ owner_id: feed.ownerId }).update({ etag, modified_at: modifiedAt });
  return { ...feed, etag, modifiedAt };
}
