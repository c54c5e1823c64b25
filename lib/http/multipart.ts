import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import busboy from 'busboy';
import { BadInputError, TooLargeError } from '../core/errors';
import { log } from '../core/log';

export interface FilePart {
  filename: string;
  contentType: string;
  /** The part's bytes as they arrive; fails with TooLargeError past the limit, or when the client goes away. */
  stream: Readable;
}

/**
 * Reads a multipart/form-data request with exactly one file part, streaming: the file is handed to
 * `store` as it arrives (never buffered here), the other parts are returned as fields (output
 * options, which may come before or after the file). If the form turns out wrong after `store`
 * succeeded (a second file, a repeated field), `undo` removes what it stored before the error goes on.
 */
export function readMultipart<T>(
  req: IncomingMessage,
  maxFileBytes: number,
  store: (file: FilePart) => Promise<T>,
  undo: (stored: T) => Promise<void>,
): Promise<{ stored: T; fields: Record<string, string> }> {
  return new Promise((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      // One byte over the limit lets busboy tell "exactly the limit" from "more".
      bb = busboy({ headers: req.headers, limits: { files: 1, fields: 20, fieldSize: 1024, fileSize: maxFileBytes + 1 }, defParamCharset: 'utf8' });
    } catch (err) {
      reject(new BadInputError(`the multipart body cannot be read: ${(err as Error).message}`));
      return;
    }
    const fields: Record<string, string> = {};
    const duplicate = new Set<string>();
    let files = 0;
    let current: Readable | undefined;
    let storing: Promise<T> | undefined;
    let failed = false;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      req.unpipe(bb);
      current?.destroy(err as Error);
      reject(err);
    };
    // The client went away mid-body: the stored part must fail, so nothing half-written stays.
    req.once('error', (err) => fail(new BadInputError(`the upload was interrupted: ${err.message}`)));
    req.once('aborted', () => fail(new BadInputError('the upload was interrupted')));

    bb.on('field', (name, value) => {
      if (name in fields) duplicate.add(name);
      fields[name] = value;
    });
    bb.on('file', (_name, stream, info) => {
      files++;
      if (storing) {
        stream.resume(); // a second file: read past it, refused at the end
        return;
      }
      current = stream;
      // Heard here too: if the store is not reading at the moment busboy fails the part (a body cut
      // before its closing boundary), an unheard 'error' would escape to the framework as a 500. The
      // store still sees the error through its own reading.
      stream.on('error', () => {});
      stream.on('limit', () => stream.destroy(new TooLargeError(maxFileBytes, 'the video')));
      storing = store({ filename: info.filename ?? '', contentType: info.mimeType, stream });
      // busboy fails the file part itself on a malformed body (a cut before the closing boundary), and
      // the store may see that plain error before busboy's own 'error' below: it is the client's, a 400.
      storing.catch((err: unknown) => fail(err instanceof Error && err.message === 'Unexpected end of form'
        ? new BadInputError(`the multipart body cannot be read: ${err.message}`)
        : err));
    });
    bb.on('filesLimit', () => { files++; });
    bb.on('error', (err: Error) => fail(new BadInputError(`the multipart body cannot be read: ${err.message}`)));
    bb.on('close', () => {
      if (failed) return;
      if (!storing) return fail(new BadInputError('the form has no file part (use -F file=@video.mp4)'));
      storing.then(
        async (stored) => {
          const problem = files > 1 ? 'send exactly one file' : duplicate.size > 0 ? `${[...duplicate][0]}: must be given once` : undefined;
          if (!problem) return resolve({ stored, fields });
          await undo(stored).catch((err: unknown) => log.error({ err }, 'could not remove the file of a refused form'));
          fail(new BadInputError(problem));
        },
        () => {}, // already failed through storing.catch
      );
    });
    req.pipe(bb);
  });
}

/**
 * A raw request body as it arrives. A client that goes away mid-body is a 400 "interrupted" (logged
 * as a client's doing), not a dependency failure.
 */
export async function* requestBody(req: IncomingMessage): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of req) yield chunk as Buffer;
  } catch (err) {
    throw new BadInputError(`the upload was interrupted: ${(err as Error).message}`);
  }
}
