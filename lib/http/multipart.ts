import busboy from 'busboy';
import { BadInputError, TooLargeError } from '../core/errors';

export interface UploadedFile {
  filename: string;
  contentType: string;
  data: Buffer;
}

/**
 * Reads a multipart/form-data body (already buffered by the framework) with exactly one file part.
 * Other parts are returned as fields (output options).
 */
export function parseMultipart(headers: Record<string, string | string[] | undefined>, body: Buffer, maxFileBytes: number) {
  return new Promise<{ file: UploadedFile; fields: Record<string, string> }>((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: headers as import('node:http').IncomingHttpHeaders, limits: { files: 1, fields: 20, fieldSize: 1024, fileSize: maxFileBytes }, defParamCharset: 'utf8' });
    } catch (err) {
      reject(new BadInputError(`the multipart body cannot be read: ${(err as Error).message}`));
      return;
    }
    const fields: Record<string, string> = {};
    const duplicate = new Set<string>();
    let file: UploadedFile | undefined;
    let files = 0;
    let truncated = false;
    bb.on('field', (name, value) => {
      if (name in fields) duplicate.add(name);
      fields[name] = value;
    });
    bb.on('file', (_name, stream, info) => {
      files++;
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('limit', () => { truncated = true; });
      // A body cut before its closing boundary errors the part too; unheard, that error would be thrown
      // out of bb.end() as a 500. busboy's own 'error' (below) answers 400.
      stream.on('error', () => {});
      stream.on('end', () => {
        file = { filename: info.filename ?? '', contentType: info.mimeType, data: Buffer.concat(chunks) };
      });
    });
    bb.on('filesLimit', () => { files++; });
    bb.on('error', (err: Error) => reject(new BadInputError(`the multipart body cannot be read: ${err.message}`)));
    bb.on('close', () => {
      if (files > 1) return reject(new BadInputError('send exactly one file'));
      if (!file) return reject(new BadInputError('the form has no file part (use -F file=@video.mp4)'));
      if (duplicate.size > 0) return reject(new BadInputError(`${[...duplicate][0]}: must be given once`));
      if (truncated) return reject(new TooLargeError(maxFileBytes));
      resolve({ file, fields });
    });
    bb.end(body);
  });
}
