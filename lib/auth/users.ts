import { randomUUID } from 'node:crypto';
import { isDuplicateKey, type Db } from '../storage/db';
import { ConflictError } from '../core/errors';

export interface User {
  id: string;
  email: string;
  passwordHash: string;
}

/** Emails compare case-insensitively: they are stored and looked up lower-cased. */
export const normalizeEmail = (email: string) => email.trim().toLowerCase();

export async function findUserByEmail(db: Db, email: string): Promise<User | undefined> {
  const row = await db('users').where({ email: normalizeEmail(email) }).first();
  return row && { id: row.id, email: row.email, passwordHash: row.password_hash };
}

export async function findUserById(db: Db, id: string): Promise<User | undefined> {
  const row = await db('users').where({ id }).first();
  return row && { id: row.id, email: row.email, passwordHash: row.password_hash };
}

/** Inserts a user; 409 when the email is taken (the unique index decides, so races are safe too). */
export async function createUser(db: Db, email: string, passwordHash: string): Promise<User> {
  const user = { id: randomUUID(), email: normalizeEmail(email), passwordHash };
  try {
    await db('users').insert({ id: user.id, email: user.email, password_hash: passwordHash, created_at: Date.now() });
  } catch (err) {
    if (isDuplicateKey(err)) throw new ConflictError('an account with this email already exists');
    throw err;
  }
  return user;
}
