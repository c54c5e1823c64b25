// The users of a load run, as real clients behave: sign up and log in, upload a batch (multipart POSTs
// or tus, whose PATCHes go round the upload replicas), wait out a 429 for as long as Retry-After says,
// poll each job, download each MP3. Every API call is timed; every wait is bounded by the run's deadline.
import { DetailedError, Upload } from 'tus-js-client';

export interface Sample { label: string; status: number; ms: number }

export class Recorder {
  readonly samples: Sample[] = [];
  /** 429s waited out, and how long in all. */
  waits = { count: 0, ms: 0 };

  constructor(readonly deadline: number) {}

  async call(label: string, url: string, init: RequestInit = {}): Promise<Response> {
    const started = performance.now();
    const res = await fetch(url, { ...init, signal: AbortSignal.timeout(Math.max(1, this.deadline - Date.now())) });
    this.samples.push({ label, status: res.status, ms: performance.now() - started });
    return res;
  }

  /** Sleeps as a 429's Retry-After asks (at least 1 s), or throws when that would pass the deadline. */
  async backOff(retryAfter: string | null): Promise<void> {
    const ms = Math.max(1, Number(retryAfter) || 1) * 1000;
    if (Date.now() + ms > this.deadline) throw new Error('the run ended while waiting out a 429');
    this.waits.count++;
    this.waits.ms += ms;
    await new Promise((r) => setTimeout(r, ms));
  }
}

export interface User { email: string; password: string; token: string }

export async function signUp(rec: Recorder, auth: string, email: string, password = 'correct horse battery'): Promise<User> {
  const body = JSON.stringify({ email, password });
  const headers = { 'content-type': 'application/json' };
  const signup = await rec.call('POST /auth/signup', `${auth}/signup`, { method: 'POST', headers, body });
  if (signup.status !== 201) throw new Error(`signup answered ${signup.status}: ${await signup.text()}`);
  const login = await rec.call('POST /auth/login', `${auth}/login`, { method: 'POST', headers, body });
  if (login.status !== 200) throw new Error(`login answered ${login.status}: ${await login.text()}`);
  return { email, password, token: ((await login.json()) as { token: string }).token };
}

const bearer = (user: User) => ({ authorization: `Bearer ${user.token}` });

/** One multipart POST, repeated after each 429 once Retry-After has passed; the job's id. */
export async function uploadPost(rec: Recorder, upload: string, user: User, video: Buffer, filename: string, fields: Record<string, string> = {}): Promise<string> {
  for (;;) {
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) form.set(k, v);
    form.set('file', new Blob([video], { type: 'video/mp4' }), filename);
    const res = await rec.call('POST /upload/', `${upload}/`, { method: 'POST', headers: bearer(user), body: form });
    if (res.status === 202) return ((await res.json()) as { jobId: string }).jobId;
    if (res.status !== 429) throw new Error(`upload answered ${res.status}: ${await res.text()}`);
    await rec.backOff(res.headers.get('retry-after'));
  }
}

/** A tus upload in `chunkSize` PATCHes, created again after each 429; the job's id. */
export async function uploadTus(rec: Recorder, upload: string, user: User, video: Buffer, filename: string, chunkSize: number, metadata: Record<string, string> = {}): Promise<string> {
  for (;;) {
    const started = performance.now();
    try {
      const jobId = await new Promise<string>((resolve, reject) => {
        let job: string | undefined;
        const u = new Upload(video, {
          endpoint: `${upload}/files`,
          headers: bearer(user),
          metadata: { filename, ...metadata },
          chunkSize,
          retryDelays: null,
          storeFingerprintForResuming: false,
          onAfterResponse: (_req, res) => { job = res.getHeader('Upload-Job-Id') ?? job; },
          onSuccess: () => (job ? resolve(job) : reject(new Error('the last PATCH named no job'))),
          onError: reject,
        });
        u.start();
      });
      rec.samples.push({ label: 'tus upload (all requests)', status: 204, ms: performance.now() - started });
      return jobId;
    } catch (err) {
      const res = err instanceof DetailedError ? err.originalResponse : null;
      if (res?.getStatus() !== 429) throw err;
      await rec.backOff(res.getHeader('Retry-After') ?? null);
    }
  }
}

export interface JobEnd { jobId: string; status: string; error?: string; accepted: number; started?: number; ended: number }

/** Polls the job until it ends; `started` is when it was first seen converting (or ended, if it never was). */
export async function waitForJob(rec: Recorder, download: string, user: User, jobId: string, accepted: number, pollMs = 300): Promise<JobEnd> {
  let started: number | undefined;
  for (;;) {
    if (Date.now() > rec.deadline) throw new Error(`job ${jobId} had not ended by the end of the run`);
    const res = await rec.call('GET /download/jobs/:id', `${download}/jobs/${jobId}`, { headers: bearer(user) });
    if (res.status === 200) {
      const view = (await res.json()) as { status: string; error?: string };
      const now = Date.now();
      if (view.status !== 'queued' && started === undefined) started = now;
      if (view.status === 'done' || view.status === 'failed') return { jobId, status: view.status, error: view.error, accepted, started, ended: now };
    } else if (res.status !== 503) {
      throw new Error(`job ${jobId}: status answered ${res.status}: ${await res.text()}`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Downloads the MP3 and checks it is one (an MPEG audio frame or an ID3 tag at the start). */
export async function downloadMp3(rec: Recorder, download: string, user: User, jobId: string): Promise<number> {
  const res = await rec.call('GET /download/jobs/:id/mp3', `${download}/jobs/${jobId}/mp3`, { headers: bearer(user) });
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200) throw new Error(`MP3 of ${jobId} answered ${res.status}`);
  const isMp3 = body.subarray(0, 3).toString('latin1') === 'ID3' || (body[0] === 0xff && (body[1]! & 0xe0) === 0xe0);
  if (!isMp3) throw new Error(`MP3 of ${jobId} is not an MP3 (${body.length} bytes)`);
  return body.length;
}

/**
 * Wrong passwords for one email, `count` at once: what a credential-stuffing script does. Returns the
 * statuses; a throttle that holds answers at most its limit of 401s and 429 for the rest.
 */
export async function passwordBurst(rec: Recorder, auth: string, email: string, count: number): Promise<number[]> {
  const headers = { 'content-type': 'application/json' };
  const body = JSON.stringify({ email, password: 'not the password at all' });
  const answers = await Promise.all(Array.from({ length: count }, () => rec.call('POST /auth/login (wrong)', `${auth}/login`, { method: 'POST', headers, body })));
  await Promise.all(answers.map((r) => r.arrayBuffer()));
  return answers.map((r) => r.status);
}
