// One file to the service: tus (resumable; the URL store lets a rerun continue) when the upload
// function offers it, else one POST of the raw bytes. Resolves to the job's id and status URL.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import * as tus from 'tus-js-client';
import { CliError, explainNetwork, explainStatus, messageOf, parseRetryAfter, type Api } from './api';
import { createUrlStorage } from './session';

export interface Accepted {
  jobId: string;
  statusUrl: string;
}

/** Whether `OPTIONS /upload/files` answers as a tus server. */
export async function offersTus(api: Api): Promise<boolean> {
  try {
    const res = await fetch(`${api.url}/upload/files`, { method: 'OPTIONS' });
    return res.headers.has('tus-resumable');
  } catch (err) {
    throw explainNetwork(err, api.url);
  }
}

/** `onResume` hears of an upload an earlier run left unfinished, with how much of it the service has. */
export function uploadWithTus(api: Api, file: string, options: Record<string, string>, onProgress: (percent: number) => void, onResume?: (percent: number) => void): Promise<Accepted> {
  const name = path.basename(file);
  const size = fs.statSync(file).size;
  let jobId: string | undefined;
  let statusUrl: string | undefined;
  return new Promise((resolve, reject) => {
    const upload = new tus.Upload(fs.createReadStream(file), {
      endpoint: `${api.url}/upload/files`,
      uploadSize: size,
      chunkSize: 8 * 1024 * 1024,
      headers: { ...api.auth },
      metadata: { filename: name, ...options },
      retryDelays: [0, 1000, 3000, 5000, 10_000],
      urlStorage: createUrlStorage(),
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      onProgress: (sent, total) => onProgress(total ? (sent / total) * 100 : 100),
      onAfterResponse: (req, res) => {
        // A HEAD is how tus-js-client asks where a stored upload stands: this run continues another's.
        if (req.getMethod() === 'HEAD' && res.getStatus() === 200) onResume?.(size ? (Number(res.getHeader('Upload-Offset')) / size) * 100 : 100);
        jobId = res.getHeader('Upload-Job-Id') ?? jobId;
        statusUrl = res.getHeader('Upload-Job-Url') ?? statusUrl;
      },
      onSuccess: () => {
        if (jobId) resolve({ jobId, statusUrl: statusUrl ?? `${api.url}/download/jobs/${jobId}` });
        else reject(new CliError(`${name}: uploaded, but the service named no job`));
      },
      onError: (err) => {
        const res = (err as tus.DetailedError).originalResponse;
        if (res) reject(new CliError(explainStatus(res.getStatus(), messageOf(res.getBody()), name), res.getStatus(), parseRetryAfter(res.getHeader('Retry-After'))));
        else reject(new CliError(`${name}: the upload was interrupted (${err.message}); run the same command again to resume`));
      },
    });
    void upload.findPreviousUploads().then((previous) => {
      if (previous[0]) upload.resumeFromPreviousUpload(previous[0]);
      upload.start();
    }, reject);
  });
}

/** The fallback: the raw bytes in one POST, streamed from disk, progress counted as they go. */
export function uploadWithPost(api: Api, file: string, options: Record<string, string>, onProgress: (percent: number) => void): Promise<Accepted> {
  const name = path.basename(file);
  const size = fs.statSync(file).size;
  const url = new URL(`${api.url}/upload/`);
  url.searchParams.set('filename', name);
  for (const [k, v] of Object.entries(options)) url.searchParams.set(k, v);
  const client = url.protocol === 'https:' ? https : http;
  const stream = fs.createReadStream(file);
  return new Promise((resolve, reject) => {
    const req = client.request(url, {
      method: 'POST',
      agent: false, // one connection, closed after the answer: nothing pooled keeps the CLI alive
      headers: { ...api.auth, 'content-type': 'application/octet-stream', 'content-length': String(size) },
    }, (res) => {
      stream.unpipe(req).destroy(); // an early answer (413, 401) ends the upload
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        if (res.statusCode === 202) {
          const { jobId, statusUrl } = JSON.parse(body) as Accepted;
          resolve({ jobId, statusUrl });
        } else reject(new CliError(explainStatus(res.statusCode ?? 0, messageOf(body), name), res.statusCode, parseRetryAfter(res.headers['retry-after'])));
      });
    });
    // A refused body (413 before reading) closes the connection while we still write: the answer is
    // on its way, so give it a moment to settle the promise before calling it a network failure.
    req.on('error', (err) => setTimeout(() => reject(explainNetwork(err, url.toString())), 500));
    let sent = 0;
    stream.on('data', (chunk) => {
      sent += chunk.length;
      onProgress(size ? (sent / size) * 100 : 100);
    });
    stream.on('error', (err) => req.destroy(err));
    stream.pipe(req);
  });
}
