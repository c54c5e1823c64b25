// The service's HTTP API as the CLI uses it, with failures turned into sentences a person can act on.
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface Job {
  jobId: string;
  status: 'importing' | 'queued' | 'converting' | 'done' | 'failed' | 'expired';
  filename: string;
  createdAt: string;
  updatedAt: string;
  error?: string;
  progress?: number;
  positionSeconds?: number;
  importedBytes?: number;
  mp3?: { size: number; durationSeconds: number; url: string };
}

/** A failure to report: its message is for the user; exitCode 1 unless said otherwise. */
export class CliError extends Error {
  /** `retryAfterSeconds`: the service's Retry-After, when it said to come back later (429, 503). */
  constructor(message: string, readonly status?: number, readonly retryAfterSeconds?: number) {
    super(message);
  }
}

/** Seconds from a Retry-After header (delay-seconds or an HTTP date); undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/** Words for an HTTP failure, given what was being done (`clip.mp4`, `job abc`). */
export function explainStatus(status: number, serverMessage: string | undefined, what: string): string {
  const detail = serverMessage ? `: ${serverMessage}` : '';
  switch (status) {
    case 401: return `not logged in, or the token has expired: run \`video2mp3 login --url URL --email EMAIL\`${detail ? ` (server${detail})` : ''}`;
    case 404: return `${what}: not found (deleted, or not yours)`;
    case 413: return `${what}: larger than the service accepts${detail}`;
    case 415: return `${what}: not a video the service can convert${detail}`;
    case 429: return `${what}: ${serverMessage ?? 'too many requests, try again later'}`;
    case 503: return `${what}: the service is busy or partly down, try again shortly${detail}`;
    default: return `${what}: HTTP ${status}${detail}`;
  }
}

export function messageOf(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { error?: { message?: string } }).error?.message;
  } catch {
    return undefined;
  }
}

/** Words for a network failure (refused, DNS, reset). */
export function explainNetwork(err: unknown, url: string): CliError {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  const code = cause?.code ?? (err as { code?: string }).code;
  return new CliError(`cannot reach ${new URL(url).origin} (${code ?? cause?.message ?? (err as Error).message}): is the service running and the URL right?`);
}

export class Api {
  constructor(readonly url: string, readonly token: string | undefined) {}

  get auth(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  /** A request to the service; non-2xx answers become CliErrors about `what`. */
  async request(pathOrUrl: string, init: RequestInit & { what?: string } = {}): Promise<Response> {
    const url = pathOrUrl.startsWith('http') ? pathOrUrl : `${this.url}${pathOrUrl}`;
    let res: Response;
    try {
      res = await fetch(url, { ...init, headers: { ...this.auth, ...(init.headers as Record<string, string>) } });
    } catch (err) {
      throw explainNetwork(err, url);
    }
    if (!res.ok) throw new CliError(explainStatus(res.status, messageOf(await res.text()), init.what ?? 'request'), res.status);
    return res;
  }

  async json<T>(pathOrUrl: string, init: RequestInit & { what?: string } = {}): Promise<T> {
    return (await (await this.request(pathOrUrl, init)).json()) as T;
  }

  async credentials(action: 'signup' | 'login', email: string, password: string): Promise<{ token?: string }> {
    const init = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email, password }), what: action === 'signup' ? 'sign up' : 'log in' };
    const res = await fetch(`${this.url}/auth/${action}`, init).catch((err: unknown) => { throw explainNetwork(err, this.url); });
    if (res.ok) return (await res.json()) as { token?: string };
    const message = messageOf(await res.text());
    if (res.status === 401) throw new CliError(`log in: ${message ?? 'email or password is wrong'}`, 401);
    throw new CliError(explainStatus(res.status, message, init.what), res.status);
  }

  job(id: string): Promise<Job> {
    return this.json<Job>(`/download/jobs/${encodeURIComponent(id)}`, { what: `job ${id}` });
  }

  /** Downloads a done job's MP3 into `dir`, through a temporary file; resolves to the file's path. */
  async download(job: Job, dir: string): Promise<string> {
    const res = await this.request(job.mp3?.url ?? `/download/jobs/${job.jobId}/mp3`, { what: `job ${job.jobId}` });
    const fromHeader = /filename\*=UTF-8''([^;]+)/.exec(res.headers.get('content-disposition') ?? '')?.[1];
    const name = path.basename(fromHeader ? decodeURIComponent(fromHeader) : `${job.filename.replace(/\.[^.]+$/, '')}.mp3`);
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, name);
    const tmp = `${file}.part`;
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), fs.createWriteStream(tmp));
    fs.renameSync(tmp, file);
    return file;
  }
}
