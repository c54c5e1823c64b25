import jwt from 'jsonwebtoken';
import { getConfig, type Config } from '../core/config';
import { GoneError, NotFoundError } from '../core/errors';
import { loadLinkSecret } from './keys';

const audience = 'video2mp3-download-link';
const secrets = new WeakMap<object, string>();

/** The link secret of this configuration, read (or generated) once. */
function secretOf(config: Readonly<Config>): string {
  let secret = secrets.get(config);
  if (!secret) secrets.set(config, (secret = loadLinkSecret(config)));
  return secret;
}

/**
 * A signed, expiring link to one job's MP3 that works without a login (it travels by email). HMAC
 * with LINK_SECRET, held by notify and download only, so it can never be used as an access token.
 */
export function mintDownloadLink(jobId: string, config: Readonly<Config> = getConfig()) {
  const expiresAt = new Date(Date.now() + config.links.ttlSeconds * 1000);
  const token = jwt.sign({}, secretOf(config), {
    algorithm: 'HS256',
    subject: jobId,
    audience,
    issuer: config.jwt.issuer,
    expiresIn: config.links.ttlSeconds,
  });
  return { url: `${config.downloadUrl}/links/${token}`, token, expiresAt };
}

/** The job id a link token grants; 410 once expired, 404 for a tampered or foreign token. */
export function verifyDownloadLink(token: string, config: Readonly<Config> = getConfig()): string {
  try {
    const claims = jwt.verify(token, secretOf(config), { algorithms: ['HS256'], audience, issuer: config.jwt.issuer });
    if (typeof claims === 'object' && typeof claims.sub === 'string') return claims.sub;
  } catch (err) {
    if (err instanceof jwt.TokenExpiredError) throw new GoneError('link_expired', 'this download link has expired; sign in to download the file');
  }
  throw new NotFoundError('link');
}
