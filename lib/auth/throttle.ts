import { createHash } from 'node:crypto';
import { RateLimiterMySQL, RateLimiterSQLite, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Config } from '../core/config';
import type { Db } from '../storage/db';
import { TooManyRequestsError } from '../core/errors';

export interface LoginThrottle {
  /** Throws 429 when the email or the client address is locked out. */
  check(email: string, ip: string): Promise<void>;
  recordFailure(email: string, ip: string): Promise<void>;
  recordSuccess(email: string): Promise<void>;
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
 * Failed logins are counted in the database (shared by every auth instance): after
 * LOGIN_MAX_FAILURES failures for one email within LOGIN_WINDOW_SECONDS, or four times as many from
 * one address, further attempts get 429 with Retry-After until the window passes.
 */
export async function createLoginThrottle(db: Db, config: Pick<Config, 'login'>): Promise<LoginThrottle> {
  const { maxFailures, windowSeconds } = config.login;
  const byEmail = await createLimiter(db, 'email', maxFailures, windowSeconds);
  const byIp = await createLimiter(db, 'ip', maxFailures * 4, windowSeconds);
  const lockedFor = async (limiter: RateLimiterAbstract, key: string) => {
    const res = await limiter.get(key);
    return res && res.consumedPoints >= limiter.points ? res.msBeforeNext : 0;
  };
  const consume = async (limiter: RateLimiterAbstract, key: string) => {
    try {
      await limiter.consume(key);
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err; // a rejection with a result only means "now over the limit"
    }
  };
  return {
    async check(email, ip) {
      const ms = Math.max(await lockedFor(byEmail, keyOf(email)), await lockedFor(byIp, keyOf(ip)));
      if (ms > 0) throw new TooManyRequestsError(ms / 1000);
    },
    async recordFailure(email, ip) {
      await Promise.all([consume(byEmail, keyOf(email)), consume(byIp, keyOf(ip))]);
    },
    async recordSuccess(email) {
      await byEmail.delete(keyOf(email));
    },
  };
}

/** At most SIGNUP_MAX_PER_HOUR signups (attempts, taken or not) per client address and hour, counted in the database. */
export async function createSignupThrottle(db: Db, config: Pick<Config, 'signup'>): Promise<SignupThrottle> {
  const byIp = await createLimiter(db, 'signup', config.signup.maxPerHour, 3600);
  return {
    async take(ip) {
      try {
        await byIp.consume(keyOf(ip));
      } catch (err) {
        if (err instanceof RateLimiterRes) throw new TooManyRequestsError(err.msBeforeNext / 1000, 'too many signups from this address, try again later');
        throw err;
      }
    },
  };
}
