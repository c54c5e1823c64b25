// tus-js-client (the reference tus client) driven from tests, as a Node user of the API would.
import { Upload, type HttpResponse } from 'tus-js-client';

export interface TusResult {
  url: string;
  jobId?: string;
  jobUrl?: string;
}

export interface TusOptions {
  endpoint?: string;
  uploadUrl?: string;
  token: string;
  filename?: string;
  metadata?: Record<string, string>;
  chunkSize?: number;
  /** tus-js-client's retry delays; a few quick ones by default (a kept-alive socket the server just closed). */
  retryDelays?: number[] | null;
  /** Called with the fraction sent so far; return true to abort the upload there. */
  abortAt?: (fraction: number) => boolean;
  onUrl?: (url: string) => void;
}

/** Uploads `data` with tus-js-client; resolves when done, or with `aborted` when `abortAt` stopped it. */
export function tusUpload(data: Buffer, opts: TusOptions): Promise<TusResult & { aborted?: boolean }> {
  return new Promise((resolve, reject) => {
    const result: TusResult = { url: '' };
    let aborted = false;
    const upload = new Upload(data, {
      endpoint: opts.endpoint,
      uploadUrl: opts.uploadUrl,
      headers: { Authorization: `Bearer ${opts.token}` },
      metadata: { filename: opts.filename ?? 'clip.mp4', ...opts.metadata },
      chunkSize: opts.chunkSize ?? Number.POSITIVE_INFINITY,
      retryDelays: opts.retryDelays === undefined ? [0, 300, 1000] : opts.retryDelays,
      storeFingerprintForResuming: false,
      onUploadUrlAvailable: () => {
        result.url = upload.url!;
        opts.onUrl?.(upload.url!);
      },
      onProgress: (sent, total) => {
        if (!aborted && opts.abortAt?.(sent / total)) {
          aborted = true;
          upload.abort().then(() => resolve({ ...result, aborted: true }), reject);
        }
      },
      onAfterResponse: (_req, res: HttpResponse) => {
        const jobId = res.getHeader('Upload-Job-Id');
        if (jobId) {
          result.jobId = jobId;
          result.jobUrl = res.getHeader('Upload-Job-Url');
        }
      },
      onSuccess: () => resolve({ ...result, url: upload.url! }),
      onError: (err) => { if (!aborted) reject(err); },
    });
    upload.start();
  });
}
