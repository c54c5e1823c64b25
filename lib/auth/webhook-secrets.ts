import { randomBytes } from 'node:crypto';
import type { Db } from '../storage/db';

/** A Standard Webhooks secret: `whsec_` and 32 random bytes in base64. */
const newSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

/** The user's webhook signing secret, created on first use. */
export async function getWebhookSecret(db: Db, userId: string): Promise<string> {
  const row = await db('users').where({ id: userId }).first('webhook_secret');
  if (row?.webhook_secret) return row.webhook_secret as string;
  // Set only if still empty, then read back: two first uses agree on one secret.
  await db('users').where({ id: userId }).whereNull('webhook_secret').update({ webhook_secret: newSecret() });
  return ((await db('users').where({ id: userId }).first('webhook_secret'))?.webhook_secret as string | undefined) ?? newSecret();
}

/** Replaces the user's secret; webhooks signed from now on use the new one. */
export async function rotateWebhookSecret(db: Db, userId: string): Promise<string> {
  const secret = newSecret();
  await db('users').where({ id: userId }).update({ webhook_secret: secret });
  return secret;
}
