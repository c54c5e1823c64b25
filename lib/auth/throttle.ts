import { createHash } from 'node:crypto';
import { RateLimiterMySQL, RateLimiterSQLite, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Config } from '../core/config';
import type { Db } from '../storage/db';
import { TooManyRequestsError } from '../core/errors';

export interface LoginThrottle {
  /**
   * Counts a login attempt against the email and the client address before the password is checked;
   * throws 429 when either has used its attempts for the window.
   */
  take(email: string, ip: string): Promise<void>;
  /** The attempt was right: the email's count starts over and the address gets its attempt back. */
  succeeded(email: string, ip: string): Promise<void>;
}

export interface SignupThrottle {
  /** Counts a signup from `ip`; throws 429 once the address has used its signups for the hour. */
  take(ip: string): Promise<void>;
}

/**
 * Keys are a hash of the email or address: of fixed length (43 characters), so any valid email
 * fits the store's key column (VARCHAR(255) on MySQL, with the prefix), and no email is stored in
 * the clear in the throttle table.
 */
const keyOf = (value: string) => createHash('sha256').update(value).digest('base64url');

function createLimiter(db: Db, keyPrefix: string, points: number, duration: number): Promise<RateLimiterAbstract> {
  return new Promise((resolve, reject) => {
    const common = { storeClient: db, storeType: 'knex', tableName: 'login_throttle', keyPrefix, points, duration };
    const done = (err?: unknown) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(limiter));
    const limiter: RateLimiterAbstract = db.client.config.client === 'mysql2'
      ? new RateLimiterMySQL({ ...common, dbName: db.client.database() }, done)
      : new RateLimiterSQLite(common, done);
  });
}

/**
 * Login attempts are counted in the database (shared by every auth instance), each with one atomic
 * upsert that returns the new count, taken before the password is checked: parallel attempts each
 * get their own count, so no burst on any number of replicas gets more than LOGIN_MAX_FAILURES
 * tries per email within LOGIN_WINDOW_SECONDS, or four times as many per address. Further attempts
 * get 429 with Retry-After until the window passes. A success gives the attempt back, so only
 * failures lock anyone out.
 */
export async function createLoginThrottle(db: Db, config: Pick<Config, 'login'>): Promise<LoginThrottle> {
  const { maxFailures, windowSeconds } = config.login;
  const byEmail = await createLimiter(db, 'email', maxFailures, windowSeconds);
  const byIp = await createLimiter(db, 'ip', maxFailures * 4, windowSeconds);
  return {
    async take(email, ip) {
      // The address first: a client locked out by address spends nothing of the email's attempts,
      // so it cannot keep someone else's account locked. An attempt the email refuses is given
      // back to the address, which then counts only attempts that reached a password check.
      await consumeOrThrow(byIp, keyOf(ip));
      try {
        await consumeOrThrow(byEmail, keyOf(email));
      } catch (err) {
        await byIp.reward(keyOf(ip));
        throw err;
      }
    },
    async succeeded(email, ip) {
      await Promise.all([byEmail.delete(keyOf(email)), byIp.reward(keyOf(ip))]);
    },
  };
}

async function consumeOrThrow(limiter: RateLimiterAbstract, key: string, message?: string): Promise<void> {
  try {
    await limiter.consume(key);
  } catch (err) {
    // A rejection carrying a result means "over the limit" (the point was still counted).
    if (err instanceof RateLimiterRes) throw new TooManyRequestsError(err.msBeforeNext / 1000, message);
    throw err;
  }
}

/** At most SIGNUP_MAX_PER_HOUR signups (attempts, taken or not) per client address and hour, counted in the database. */
export async function createSignupThrottle(db: Db, config: Pick<Config, 'signup'>): Promise<SignupThrottle> {
  const byIp = await createLimiter(db, 'signup', config.signup.maxPerHour, 3600);
  return {
    take: (ip) => consumeOrThrow(byIp, keyOf(ip), 'too many signups from this address, try again later'),
  };
}
