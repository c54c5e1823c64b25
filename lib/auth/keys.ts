import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../core/config';

export interface PublicKey {
  kid: string;
  key: KeyObject;
  jwk: Record<string, unknown>;
}

/** RFC 7638 thumbprint: a stable key id that changes whenever the key does. */
function thumbprint(key: KeyObject): string {
  const jwk = key.export({ format: 'jwk' });
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  return createHash('sha256').update(canonical).digest('base64url');
}

function toPublicKey(key: KeyObject): PublicKey {
  const kid = thumbprint(key);
  return { kid, key, jwk: { ...key.export({ format: 'jwk' }), kid, use: 'sig', alg: 'ES256' } };
}

function readOrCreate(file: string, create: () => string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  try {
    fs.writeFileSync(file, create(), { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err; // another process won the race
  }
  return fs.readFileSync(file, 'utf8');
}

/** The ES256 signing key: JWT_PRIVATE_KEY, or on one machine a key generated once into DATA_DIR. */
export function loadSigningKey(config: Pick<Config, 'jwt' | 'dataDir'>): { kid: string; key: KeyObject } {
  const pem = config.jwt.privateKey ?? readOrCreate(path.join(config.dataDir, 'jwt-private.pem'), () =>
    generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString());
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new Error('JWT_PRIVATE_KEY must be an EC P-256 key (ES256)');
  }
  return { kid: thumbprint(createPublicKey(key)), key };
}

/**
 * The keys tokens are verified with: every PEM block in JWT_PUBLIC_KEY (several during a rotation),
 * or the public half of the signing key.
 */
export function loadVerificationKeys(config: Pick<Config, 'jwt' | 'dataDir'>): PublicKey[] {
  if (config.jwt.publicKey) {
    const blocks = config.jwt.publicKey.match(/-----BEGIN PUBLIC KEY-----[\s\S]+?-----END PUBLIC KEY-----/g) ?? [];
    if (blocks.length === 0) throw new Error('JWT_PUBLIC_KEY holds no PUBLIC KEY block');
    return blocks.map((b) => toPublicKey(createPublicKey(b)));
  }
  return [toPublicKey(createPublicKey(loadSigningKey(config).key))];
}

/** The HMAC secret for download links: LINK_SECRET, or one generated once into DATA_DIR. */
export function loadLinkSecret(config: Pick<Config, 'links' | 'dataDir'>): string {
  return config.links.secret ?? readOrCreate(path.join(config.dataDir, 'link-secret'), () => randomBytes(32).toString('base64url'));
}
