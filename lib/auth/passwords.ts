import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

// scrypt with N=2^15, r=8, p=1 (OWASP's minimum is 2^17 with r=8 for interactive logins on servers
// with more memory; 2^15 keeps a login under ~100 ms and 32 MiB on a small pod). Parameters are stored
// with each hash so they can be raised later without invalidating existing users.
const params = { N: 2 ** 15, r: 8, p: 1 };
const keyLength = 32;

function derive(password: string, salt: Buffer, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFKC'), salt, keyLength, { ...opts, maxmem: 128 * opts.N! * opts.r! * 2 }, (err, key) =>
      err ? reject(err) : resolve(key));
  });
}

/** A salted scrypt hash: `scrypt$N$r$p$salt$hash` (base64url). */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await derive(password, salt, params);
  return ['scrypt', params.N, params.r, params.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

/** Compares in constant time; false for a malformed stored hash. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const actual = await derive(password, Buffer.from(salt, 'base64url'), { N: Number(n), r: Number(r), p: Number(p) });
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/**
 * Compared against when the email is unknown, so timing does not tell: it has the current parameters,
 * so verifying costs what a real user's hash costs, and random bytes for its hash, which no password
 * derives to. Made without running scrypt: a hash computed at module load took ~80 ms of a cold
 * start's CPU, competing with the first login's own scrypt.
 */
export const dummyHash = ['scrypt', params.N, params.r, params.p, randomBytes(16).toString('base64url'), randomBytes(keyLength).toString('base64url')].join('$');
