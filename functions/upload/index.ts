import { getBlobs } from '../../lib/storage/blobs';
import { getConfig } from '../../lib/core/config';
import { getDb } from '../../lib/storage/db';
import { BadInputError, UnsupportedMediaError } from '../../lib/core/errors';
import { createRouter, handle, type Request } from '../../lib/http/router';
import { parseMultipart } from '../../lib/http/multipart';
import { parseMp3Options } from '../../lib/media/options';
import { getBroker } from '../../lib/messaging/queue';
import { authenticate } from '../../lib/auth/tokens';
import { acceptUpload } from '../../lib/pipeline/uploads';

const router = createRouter();

/** The video and its options: one multipart file part, or a raw video body named by header or query. */
async function readUpload(req: Request) {
  const body = (req as Request & { rawBody?: Buffer }).rawBody ?? Buffer.alloc(0);
  const query = req.query as Record<string, unknown>;
  if (req.is('multipart/form-data')) {
    const { file, fields } = await parseMultipart(req.headers, body, getConfig().limits.uploadBytes);
    return { filename: file.filename, data: file.data, options: parseMp3Options({ ...query, ...fields }) };
  }
  if (req.is(['video/*', 'application/octet-stream'])) {
    const filename = req.get('x-filename') ?? (typeof query.filename === 'string' ? query.filename : undefined);
    if (!filename) throw new BadInputError('name the file with an X-Filename header or a filename query parameter');
    const { filename: _filename, ...options } = query;
    return { filename, data: body, options: parseMp3Options(options) };
  }
  throw new UnsupportedMediaError('send multipart/form-data with one file, or the video itself as video/* or application/octet-stream');
}

router.post('/', async (req, res) => {
  const claims = authenticate(req.headers.authorization);
  const upload = await readUpload(req);
  const config = getConfig();
  const job = await acceptUpload({ db: await getDb(), blobs: await getBlobs(), broker: await getBroker(), config }, { id: claims.sub, email: claims.email }, upload);
  const statusUrl = `${config.downloadUrl}/jobs/${job.id}`;
  res.status(202).location(statusUrl).json({ jobId: job.id, status: job.status, statusUrl });
});

export const handler = handle(router);
