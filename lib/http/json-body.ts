import type { IncomingMessage } from 'node:http';
import { BadInputError, TooLargeError } from '../core/errors';

/**
 * Reads a small JSON body from a route whose body the framework does not parse (upload's POST,
 * lib/http/serve.ts): at most `limit` bytes, then 413; malformed JSON is a 400.
 */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new TooLargeError(limit);
    parts.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(parts).toString('utf8'));
  } catch (err) {
    throw new BadInputError('the body is not valid JSON', { cause: err });
  }
}
