/**
 * lib/auth owns who a caller is: accounts and password hashes, the login throttle, access tokens
 * (ES256, verified locally by every function), their keys, and the signed download links that work
 * without a login.
 */
import { z } from 'zod';
import { lazyClient } from '../core/clients';
import { getConfig } from '../core/config';
import { getDb, type Db } from '../storage/db';
import { BadInputError, InvalidCredentialsError } from '../core/errors';
import { log } from '../core/log';
import { dummyHash, hashPassword, verifyPassword } from './passwords';
import { createLoginThrottle, createSignupThrottle, type LoginThrottle, type SignupThrottle } from './throttle';
import { createUser, findUserByEmail, normalizeEmail } from './users';

export const credentialsSchema = z.object({
  email: z.email('must be a valid email address').max(254),
  password: z.string().min(8, 'must be at least 8 characters').max(1024, 'must be at most 1024 characters'),
});
export type Credentials = z.infer<typeof credentialsSchema>;

/** The login throttle of this instance, sharing the instance's database. */
export const getLoginThrottle = lazyClient(
  'login-throttle',
  async () => createLoginThrottle(await getDb(), getConfig()),
  async () => {},
);

/** The signup limit of this instance, sharing the instance's database. */
export const getSignupThrottle = lazyClient(
  'signup-throttle',
  async () => createSignupThrottle(await getDb(), getConfig()),
  async () => {},
);

/** Creates an account; 429 when the address made too many signups, 409 if the email is taken. */
export async function signUp(db: Db, throttle: SignupThrottle, { email, password }: Credentials, ip: string) {
  await throttle.take(ip);
  const user = await createUser(db, email, await hashPassword(password));
  log.info({ userId: user.id }, 'user signed up');
  return { id: user.id, email: user.email };
}

/**
 * Checks credentials. The attempt is counted before the password is checked (see throttle.ts), so
 * parallel guesses cannot all be tried. Unknown email and wrong password give the same 401 after the
 * same scrypt work, and both count towards the throttle.
 */
export async function logIn(db: Db, throttle: LoginThrottle, email: string, password: string, ip: string) {
  const key = normalizeEmail(email);
  await throttle.take(key, ip);
  const user = await findUserByEmail(db, key);
  const ok = await verifyPassword(password, user?.passwordHash ?? dummyHash);
  if (!user || !ok) {
    log.info({ ip }, 'login failed');
    throw new InvalidCredentialsError();
  }
  await throttle.succeeded(key, ip);
  return user;
}

/**
 * Login credentials from `Authorization: Basic …` (as the original system's clients send) or a JSON
 * body. Login asks only for strings within the stored columns' bounds, not signup's rules: an account
 * made under older rules must still be able to log in, and a wrong guess gets the same 401 either way.
 */
export const loginSchema = credentialsSchema.extend({ email: z.string().max(254), password: z.string().max(1024) });

export function readCredentials(authorization: string | undefined, body: unknown, isJson: boolean): Credentials {
  const basic = /^Basic ([A-Za-z0-9+/=]+)$/.exec(authorization ?? '');
  let input = body;
  if (basic) {
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 1) throw new BadInputError('the Basic credentials must be email:password');
    input = { email: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  } else if (!isJson) {
    throw new BadInputError('send HTTP Basic credentials or a JSON body {email, password}');
  }
  const parsed = loginSchema.safeParse(input);
  if (!parsed.success) throw new BadInputError('email and password are required strings');
  return parsed.data;
}
