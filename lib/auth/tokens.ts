import jwt from 'jsonwebtoken';
import { randomUUID } from 'node:crypto';
import { getConfig, type Config } from '../core/config';
import { UnauthorizedError } from '../core/errors';
import { loadSigningKey, loadVerificationKeys, type PublicKey } from './keys';

export interface Claims {
  sub: string;
  email: string;
  iss: string;
  aud: string;
  iat: number;
  exp: number;
  jti: string;
}

const algorithm = 'ES256';
const signers = new WeakMap<object, ReturnType<typeof loadSigningKey>>();
const verifiers = new WeakMap<object, PublicKey[]>();

function signer(config: Readonly<Config>) {
  let s = signers.get(config);
  if (!s) signers.set(config, (s = loadSigningKey(config)));
  return s;
}

/** The keys this instance verifies with (cached per configuration). */
export function verificationKeys(config: Readonly<Config> = getConfig()): PublicKey[] {
  let v = verifiers.get(config);
  if (!v) verifiers.set(config, (v = loadVerificationKeys(config)));
  return v;
}

/** Mints a short-lived access token. Only auth holds the private key. */
export function signAccessToken(user: { id: string; email: string }, config: Readonly<Config> = getConfig()) {
  const { kid, key } = signer(config);
  const token = jwt.sign({ email: user.email }, key, {
    algorithm,
    keyid: kid,
    subject: user.id,
    issuer: config.jwt.issuer,
    audience: config.jwt.audience,
    expiresIn: config.jwt.ttlSeconds,
    jwtid: randomUUID(),
  });
  return { token, tokenType: 'Bearer' as const, expiresIn: config.jwt.ttlSeconds };
}

/**
 * Verifies locally (no call to auth): ES256 only, a known `kid`, issuer, audience and expiry.
 * Every failure is the same 401, so the response does not tell an attacker which check failed.
 */
export function verifyAccessToken(token: string, config: Readonly<Config> = getConfig()): Claims {
  const keys = verificationKeys(config); // outside the guard: a key misconfiguration is ours, not a 401
  try {
    // Inside the guard: decode throws on a payload that is not JSON.
    const decoded = jwt.decode(token, { complete: true });
    const kid = decoded && typeof decoded === 'object' ? decoded.header.kid : undefined;
    const key = keys.find((k) => k.kid === kid);
    if (!key) throw new Error('unknown key');
    const claims = jwt.verify(token, key.key, {
      algorithms: [algorithm],
      issuer: config.jwt.issuer,
      audience: config.jwt.audience,
    });
    if (typeof claims !== 'object' || typeof claims.sub !== 'string' || typeof claims.email !== 'string') {
      throw new Error('missing claims');
    }
    return claims as Claims;
  } catch {
    throw new UnauthorizedError('the token is invalid or expired');
  }
}

/** Claims of the `Authorization: Bearer …` header, or a 401. */
export function authenticate(authorization: string | undefined, config: Readonly<Config> = getConfig()): Claims {
  const m = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/.exec(authorization ?? '');
  if (!m) throw new UnauthorizedError();
  return verifyAccessToken(m[1]!, config);
}

/** The JSON Web Key Set other services can verify tokens with. */
export function jwks(config: Readonly<Config> = getConfig()) {
  return { keys: verificationKeys(config).map((k) => k.jwk) };
}
