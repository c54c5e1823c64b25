import { getBlobs } from '../../lib/storage/blobs';
import { getConfig } from '../../lib/core/config';
import { getDb } from '../../lib/storage/db';
import { BadInputError, UnsupportedMediaError } from '../../lib/core/errors';
import { createRouter, handle, type Request } from '../../lib/http/router';
import { parseCallbackUrl } from '../../lib/core/callback-url';
import { readMultipart, requestBody } from '../../lib/http/multipart';
import { serveTus } from '../../lib/http/tus';
import { parseMp3Options } from '../../lib/media/options';
import { getBroker } from '../../lib/messaging/queue';
import { authenticate } from '../../lib/auth/tokens';
import { queueJob, storeVideo, type UploadDeps } from '../../lib/pipeline/uploads';
import { parseImportRequest, startImport, type ImportDeps } from '../../lib/pipeline/imports';
import type { Job } from '../../lib/pipeline/jobs';
import { readJsonBody } from '../../lib/http/json-body';
import type { ResumableDeps } from '../../lib/pipeline/resumable';

const router = createRouter();

const getDeps = async (): Promise<ResumableDeps & ImportDeps> => ({ db: await getDb(), blobs: await getBlobs(), broker: await getBroker(), config: getConfig() });

/**
 * The video streamed into the store, and its options: one multipart file part, or a raw video body
 * named by header or query. The body was not buffered by the framework (lib/http/serve.ts).
 */
async function storeUpload(req: Request, owner: { id: string }, deps: UploadDeps) {
  const query = req.query as Record<string, unknown>;
  if (req.is('multipart/form-data')) {
    const { stored, fields } = await readMultipart(
      req,
      deps.config.limits.uploadBytes,
      (file) => storeVideo(deps, owner, { filename: file.filename, source: file.stream }),
      async (video) => { await deps.blobs.delete('videos', video.blob.id); },
    );
    try {
      const all = { ...query, ...fields };
      return { video: stored, options: parseMp3Options(all), callbackUrl: parseCallbackUrl(all.callbackUrl, deps.config.webhooks) };
    } catch (err) {
      await deps.blobs.delete('videos', stored.blob.id);
      throw err;
    }
  }
  if (req.is(['video/*', 'application/octet-stream'])) {
    const filename = req.get('x-filename') ?? (typeof query.filename === 'string' ? query.filename : undefined);
    if (!filename) throw new BadInputError('name the file with an X-Filename header or a filename query parameter');
    const { filename: _filename, ...rest } = query;
    const options = parseMp3Options(rest);
    const callbackUrl = parseCallbackUrl(query.callbackUrl, deps.config.webhooks); // before any byte is stored
    return { video: await storeVideo(deps, owner, { filename, source: requestBody(req) }), options, callbackUrl };
  }
  throw new UnsupportedMediaError('send multipart/form-data with one file, the video itself as video/* or application/octet-stream, or JSON with the url to import');
}

router.post('/', async (req, res) => {
  const claims = authenticate(req.headers.authorization);
  const deps = await getDeps();
  const owner = { id: claims.sub, email: claims.email };
  let job: Job;
  if (req.is('application/json')) {
    job = await startImport(deps, owner, parseImportRequest(await readJsonBody(req, 16 * 1024), deps.config));
  } else {
    const { video, options, callbackUrl } = await storeUpload(req, owner, deps);
    job = await queueJob(deps, owner, video, options, callbackUrl);
  }
  const statusUrl = `${getConfig().downloadUrl}/jobs/${job.id}`;
  res.status(202).location(statusUrl).json({ jobId: job.id, status: job.status, statusUrl });
});

// Resumable uploads (tus 1.0): creation, PATCHes, HEAD, termination. Every request needs the token.
router.all(['/files', '/files/{*rest}'], async (req, res) => {
  const claims = req.method === 'OPTIONS' ? undefined : authenticate(req.headers.authorization);
  await serveTus(req, res, await getDeps(), claims && { id: claims.sub, email: claims.email });
});

export const handler = handle(router);
