// The web page: sign up / log in, upload videos (tus when the service offers it, else one POST) or
// import them from a URL, follow each job until it ends, play, download and delete; the podcast feed
// (web/extras.ts). Plain DOM, no framework.
import * as tus from 'tus-js-client';
import { showPlayer, wireFeed } from './extras';

interface Job {
  jobId: string;
  status: 'importing' | 'queued' | 'converting' | 'done' | 'failed' | 'expired';
  filename: string;
  createdAt: string;
  error?: string;
  progress?: number;
  importedBytes?: number;
  mp3?: { size: number; durationSeconds: number; url: string };
}

/** One row of the list: an upload in flight, then its job. */
interface Item {
  el: HTMLLIElement;
  filename: string;
  jobId?: string;
  status: Job['status'] | 'uploading' | 'paused' | 'waiting' | 'rejected';
  resume?: () => void;
}

type ApiName = 'auth' | 'upload' | 'download';
const config = (window as unknown as { video2mp3Config?: Partial<Record<ApiName, string>> }).video2mp3Config ?? {};
const apiParam = new URLSearchParams(location.search).get('api');

/** Base URL of a function: from config.js, else `?api=` (a local stack elsewhere), else this origin. */
const base = (name: ApiName) => (config[name] ?? `${apiParam ?? location.origin}/${name}`).replace(/\/+$/, '');

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const items = new Map<string, Item>();
let token = sessionStorage.getItem('video2mp3.token');
let pollTimer: number | undefined;
let tusCheck: Promise<boolean> | undefined;

/** How often paused uploads are tried again, besides the browser's `online` event. */
const retryEveryMs = 5000;

class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Words for a failed request: what happened in the user's terms, then the service's own message. */
function explain(status: number, serverMessage: string | undefined): string {
  const detail = serverMessage ? ` (${serverMessage})` : '';
  switch (status) {
    case 0: return `Cannot reach the service. Check your connection and try again.`;
    case 401: return `You are not logged in, or your session has expired. Log in again.${detail}`;
    case 404: return `Not found: it may have been deleted.${detail}`;
    case 409: return serverMessage ?? 'Conflict.';
    case 413: return `The file is too large for the service${detail}.`;
    case 415: return `This file cannot be converted${detail}.`;
    case 429: return serverMessage ? `Please wait: ${serverMessage}.` : 'Too many requests; wait a little and try again.';
    case 503: return `The service is busy or partly down; try again shortly.${detail}`;
    default: return status >= 500 ? `The service failed (HTTP ${status}); try again later.` : serverMessage ?? `The request was refused (HTTP ${status}).`;
  }
}

function errorFromBody(status: number, body: string): ApiError {
  let message: string | undefined;
  try {
    message = (JSON.parse(body) as { error?: { message?: string } }).error?.message;
  } catch {
    message = undefined;
  }
  return new ApiError(status, explain(status, message));
}

async function api(name: ApiName, path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  if (token) headers.set('Authorization', `Bearer ${token}`);
  let res: Response;
  try {
    res = await fetch(`${base(name)}${path}`, { ...init, headers });
  } catch {
    throw new ApiError(0, explain(0, undefined));
  }
  if (!res.ok) {
    const error = errorFromBody(res.status, await res.text());
    if (res.status === 401 && token) logOut(error.message);
    throw error;
  }
  return res;
}

function say(text: string, kind: 'error' | 'info' = 'error') {
  const el = $('message');
  el.textContent = text;
  el.className = kind;
  el.hidden = false;
}
const hush = () => { $('message').hidden = true; };

function showSignedIn() {
  const signedIn = Boolean(token);
  $('account').hidden = signedIn;
  $('convert').hidden = !signedIn;
  $('jobs-section').hidden = !signedIn;
  $('feed-section').hidden = !signedIn;
  $('who').hidden = !signedIn;
  $('who-email').textContent = sessionStorage.getItem('video2mp3.email') ?? '';
}

/**
 * tus-js-client keeps a resume record (the upload's URL, the file's name and size) in localStorage
 * for every unfinished upload: they belong to the session, so the next person at this browser
 * neither sees nor resumes them.
 */
async function forgetResumableUploads() {
  const storage = tus.defaultOptions.urlStorage;
  for (const upload of await storage.findAllUploads()) await storage.removeUpload(upload.urlStorageKey);
}

function logOut(reason?: string) {
  token = null;
  sessionStorage.removeItem('video2mp3.token');
  sessionStorage.removeItem('video2mp3.email');
  void forgetResumableUploads().catch(() => undefined); // storage refused (private mode): nothing was kept
  window.clearTimeout(pollTimer);
  items.clear();
  $('jobs').replaceChildren();
  showSignedIn();
  if (reason) say(reason);
  else hush();
  $<HTMLInputElement>('email').focus();
}

async function onAccountSubmit(event: SubmitEvent) {
  event.preventDefault();
  const email = $<HTMLInputElement>('email').value.trim();
  const password = $<HTMLInputElement>('password').value;
  const action = (event.submitter as HTMLButtonElement | null)?.value ?? 'login';
  if (!email || !password) return say('Enter your email and a password.');
  const json = { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ email, password }) };
  try {
    if (action === 'signup') {
      await api('auth', '/signup', json);
      say('Account created. You are logged in.', 'info');
    } else hush();
    const { token: issued } = (await (await api('auth', '/login', json)).json()) as { token: string };
    token = issued;
    sessionStorage.setItem('video2mp3.token', issued);
    sessionStorage.setItem('video2mp3.email', email);
    $<HTMLInputElement>('password').value = '';
    showSignedIn();
    await Promise.all([loadJobs(), feed.load()]);
    $<HTMLInputElement>('video').focus();
  } catch (err) {
    say((err as Error).message);
  }
}

/** The output options chosen on the page, as the API's field names. */
function chosenOptions(): Record<string, string> {
  const quality = $<HTMLSelectElement>('quality').value;
  const options: Record<string, string> = quality.startsWith('b') ? { bitrate: quality.slice(1) } : { quality: quality.slice(1) };
  const sampleRate = $<HTMLSelectElement>('sample-rate').value;
  if (sampleRate) options.sampleRate = sampleRate;
  if ($<HTMLInputElement>('mono').checked) options.channels = '1';
  const loudness = $<HTMLSelectElement>('loudness').value;
  if (loudness) options.loudness = loudness;
  const cover = $<HTMLSelectElement>('cover').value;
  if (cover !== 'auto') options.cover = cover;
  return options;
}

const formatBytes = (n: number) => (n < 1024 * 1024 ? `${(n / 1024).toFixed(0)} KB` : `${(n / 1024 / 1024).toFixed(1)} MB`);

function render(item: Item, detail: { text: string; progress?: number; error?: boolean; job?: Job }) {
  const { el } = item;
  el.dataset.status = item.status;
  if (item.jobId) el.dataset.jobId = item.jobId;
  const name = document.createElement('div');
  name.className = 'name';
  name.textContent = item.filename;
  const status = document.createElement('div');
  status.className = detail.error ? 'status error' : 'status';
  status.textContent = detail.text;
  const parts: HTMLElement[] = [name, status];
  if (detail.progress !== undefined) {
    const bar = document.createElement('progress');
    bar.max = 100;
    bar.value = detail.progress;
    bar.setAttribute('aria-label', `${item.filename}: ${detail.text}`);
    parts.push(bar);
  }
  const actions = document.createElement('div');
  actions.className = 'actions';
  const button = (label: string, onClick: () => void, secondary = false) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = label;
    b.setAttribute('aria-label', `${label} ${item.filename}`);
    if (secondary) b.className = 'secondary';
    b.addEventListener('click', onClick);
    actions.append(b);
  };
  if (item.status === 'paused' && item.resume) button('Resume', item.resume);
  if (item.status === 'done' && item.jobId) button('Play', () => void showPlayer(el, item.jobId!, item.filename, api).catch((err: Error) => say(err.message)));
  if (item.status === 'done' && item.jobId) button('Download', () => void download(item));
  if (item.jobId) button('Delete', () => void remove(item), true);
  if (actions.childElementCount > 0) parts.push(actions);
  el.replaceChildren(...parts);
  $('no-jobs').hidden = items.size > 0;
}

function renderJob(item: Item, job: Job) {
  item.status = job.status;
  item.filename = job.filename;
  switch (job.status) {
    case 'importing': return render(item, { text: `Importing${job.progress !== undefined ? ` ${job.progress}%` : ` ${formatBytes(job.importedBytes ?? 0)}`}`, progress: job.progress });
    case 'queued': return render(item, { text: 'Queued for conversion' });
    case 'converting': return render(item, { text: `Converting${job.progress !== undefined ? ` ${job.progress}%` : '…'}`, progress: job.progress });
    case 'done': return render(item, { text: `Done: ${formatBytes(job.mp3?.size ?? 0)}, ${Math.round(job.mp3?.durationSeconds ?? 0)} s`, job });
    case 'failed': return render(item, { text: `Conversion failed: ${job.error ?? 'unknown error'}`, error: true });
    default: return render(item, { text: 'Expired: the files were removed', error: true });
  }
}

function newItem(key: string, filename: string, status: Item['status'], atTop: boolean): Item {
  const el = document.createElement('li');
  const item: Item = { el, filename, status };
  items.set(key, item);
  if (atTop) $('jobs').prepend(el);
  else $('jobs').append(el);
  return item;
}

async function loadJobs() {
  const { jobs } = (await (await api('download', '/jobs?limit=100')).json()) as { jobs: Job[] };
  for (const job of jobs) {
    const item = items.get(job.jobId) ?? newItem(job.jobId, job.filename, job.status, false);
    item.jobId = job.jobId;
    renderJob(item, job);
  }
  $('no-jobs').hidden = items.size > 0;
  schedulePoll();
}

/** Polls each job that has not ended, once a second, while any is left. */
function schedulePoll() {
  window.clearTimeout(pollTimer);
  const open = [...items.values()].filter((i) => i.jobId && (i.status === 'importing' || i.status === 'queued' || i.status === 'converting'));
  if (open.length === 0 || !token) return;
  pollTimer = window.setTimeout(() => {
    void Promise.all(open.map(async (item) => {
      try {
        renderJob(item, (await (await api('download', `/jobs/${item.jobId}`)).json()) as Job);
      } catch (err) {
        if ((err as ApiError).status === 404) {
          item.el.remove();
          items.delete(item.jobId!);
        } else say((err as Error).message);
      }
    })).then(schedulePoll);
  }, 1000);
}

function jobAccepted(item: Item, jobId: string | undefined) {
  if (!jobId) {
    item.status = 'rejected';
    return render(item, { text: 'Uploaded, but the service named no job.', error: true });
  }
  item.jobId = jobId;
  item.status = 'queued';
  items.set(jobId, item);
  render(item, { text: 'Queued for conversion' });
  schedulePoll();
}

/** A 429 without Retry-After is tried again after this; one asking to wait longer than the maximum (a spent day) fails. */
const defaultRetrySeconds = 10;
const maxRetryWaitSeconds = 15 * 60;

function parseRetryAfter(value: string | null | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

/**
 * A full queue (429) empties as jobs finish: shows the service's message with a countdown of its
 * Retry-After, then tries the upload again. False when the wait is too long to sit through.
 */
function waitThenRetry(item: Item, err: ApiError, retryAfter: string | null | undefined, retry: () => void): boolean {
  const seconds = parseRetryAfter(retryAfter) ?? defaultRetrySeconds;
  if (seconds > maxRetryWaitSeconds) return false;
  const until = Date.now() + seconds * 1000;
  item.status = 'waiting';
  const tick = () => {
    if (!token || item.status !== 'waiting') return; // logged out meanwhile
    const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    render(item, { text: `${err.message} Trying again in ${left} s.`, progress: seconds > 0 ? Math.round(100 * (1 - left / seconds)) : 100 });
    if (left > 0) {
      window.setTimeout(tick, Math.min(1000, until - Date.now()));
      return;
    }
    item.status = 'uploading';
    render(item, { text: 'Uploading 0%', progress: 0 });
    retry();
  };
  tick();
  return true;
}

function uploadFailed(item: Item, err: ApiError) {
  item.status = 'rejected';
  render(item, { text: err.message, error: true });
  say(`${item.filename}: ${err.message}`);
}

/** Whether the upload function offers tus (OPTIONS answers Tus-Resumable), asked once. */
function offersTus(): Promise<boolean> {
  tusCheck ??= fetch(`${base('upload')}/files`, { method: 'OPTIONS' })
    .then((res) => res.headers.has('Tus-Resumable'), () => false);
  return tusCheck;
}

function uploadWithTus(file: File, item: Item, options: Record<string, string>) {
  let jobId: string | undefined;
  let percent = 0;
  const upload = new tus.Upload(file, {
    endpoint: `${base('upload')}/files`,
    headers: { Authorization: `Bearer ${token}` },
    metadata: { filename: file.name, ...options },
    chunkSize: 8 * 1024 * 1024,
    retryDelays: [0, 1000, 3000, 5000, 10000],
    removeFingerprintOnSuccess: true,
    onProgress: (sent, total) => {
      percent = Math.floor((sent / total) * 100);
      render(item, { text: `Uploading ${percent}%`, progress: percent });
    },
    onAfterResponse: (_req, res) => { jobId = res.getHeader('Upload-Job-Id') ?? jobId; },
    onSuccess: () => jobAccepted(item, jobId),
    onError: (err) => {
      const response = (err as tus.DetailedError).originalResponse;
      if (response && response.getStatus() >= 400 && response.getStatus() < 500) {
        const error = errorFromBody(response.getStatus(), response.getBody());
        if (response.getStatus() === 429 && waitThenRetry(item, error, response.getHeader('Retry-After'), () => upload.start())) return;
        uploadFailed(item, error);
        return;
      }
      // The connection dropped (or the service is down) after the retries: resume from the offset the
      // service has, by hand or when the browser is back online.
      item.status = 'paused';
      item.resume = () => { item.status = 'uploading'; render(item, { text: 'Resuming…' }); upload.start(); };
      render(item, { text: `Upload interrupted at ${percent}%: the connection was lost. It resumes where it stopped.`, progress: percent, error: true });
    },
  });
  void upload.findPreviousUploads().then((previous) => {
    if (previous[0]) upload.resumeFromPreviousUpload(previous[0]);
    upload.start();
  });
}

/** The fallback without tus: one multipart POST, with progress from XMLHttpRequest. */
function uploadWithPost(file: File, item: Item, options: Record<string, string>) {
  const form = new FormData();
  for (const [k, v] of Object.entries(options)) form.append(k, v);
  form.append('file', file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open('POST', `${base('upload')}/`);
  xhr.setRequestHeader('Authorization', `Bearer ${token}`);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) render(item, { text: `Uploading ${Math.floor((e.loaded / e.total) * 100)}%`, progress: Math.floor((e.loaded / e.total) * 100) });
  };
  xhr.onload = () => {
    if (xhr.status === 202) return jobAccepted(item, (JSON.parse(xhr.responseText) as { jobId: string }).jobId);
    const error = errorFromBody(xhr.status, xhr.responseText);
    if (xhr.status === 401) logOut(error.message);
    else if (xhr.status === 429 && waitThenRetry(item, error, xhr.getResponseHeader('Retry-After'), () => uploadWithPost(file, item, options))) return;
    else uploadFailed(item, error);
  };
  xhr.onerror = () => {
    item.status = 'paused';
    item.resume = () => { item.status = 'uploading'; uploadWithPost(file, item, options); };
    render(item, { text: `${explain(0, undefined)} The upload starts again from the beginning.`, error: true });
  };
  xhr.send(form);
}

async function uploadFiles(files: FileList | File[]) {
  hush();
  const options = chosenOptions();
  const tusOffered = await offersTus();
  for (const file of files) {
    const item = newItem(`upload-${crypto.randomUUID()}`, file.name, 'uploading', true);
    render(item, { text: 'Uploading 0%', progress: 0 });
    if (tusOffered) uploadWithTus(file, item, options);
    else uploadWithPost(file, item, options);
  }
}

/** Asks the service to fetch a video from a URL; the job then shows `importing` like an upload. */
async function importUrl(event: SubmitEvent) {
  event.preventDefault();
  hush();
  const input = $<HTMLInputElement>('import-url');
  const url = input.value.trim();
  if (!url) return say('Enter the URL of a video.');
  const item = newItem(`import-${crypto.randomUUID()}`, url.split('/').filter(Boolean).at(-1) ?? url, 'importing', true);
  render(item, { text: 'Importing…' });
  try {
    const res = await api('upload', '/', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ url, ...chosenOptions() }) });
    const { jobId } = (await res.json()) as { jobId: string };
    input.value = '';
    item.jobId = jobId;
    items.set(jobId, item);
    schedulePoll();
  } catch (err) {
    uploadFailed(item, err as ApiError);
  }
}

async function download(item: Item) {
  try {
    const res = await api('download', `/jobs/${item.jobId}/mp3`);
    const name = /filename\*=UTF-8''([^;]+)/.exec(res.headers.get('Content-Disposition') ?? '')?.[1];
    const a = document.createElement('a');
    a.href = URL.createObjectURL(await res.blob());
    a.download = name ? decodeURIComponent(name) : `${item.filename.replace(/\.[^.]+$/, '')}.mp3`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
  } catch (err) {
    say((err as Error).message);
  }
}

async function remove(item: Item) {
  try {
    await api('download', `/jobs/${item.jobId}`, { method: 'DELETE' });
    item.el.remove();
    items.delete(item.jobId!);
    $('no-jobs').hidden = items.size > 0;
    say(`${item.filename} deleted.`, 'info');
  } catch (err) {
    say((err as Error).message);
  }
}

function wireDropZone() {
  const drop = $('drop');
  const input = $<HTMLInputElement>('video');
  input.addEventListener('change', () => {
    if (input.files?.length) void uploadFiles([...input.files]);
    input.value = '';
  });
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    if (e.dataTransfer?.files.length) void uploadFiles([...e.dataTransfer.files]);
  });
}

function main() {
  $<HTMLFormElement>('account-form').addEventListener('submit', (e) => void onAccountSubmit(e));
  $('logout').addEventListener('click', () => logOut());
  wireDropZone();
  $<HTMLFormElement>('import-form').addEventListener('submit', (e) => void importUrl(e));
  // Paused uploads continue once the browser is back online, and every few seconds anyway: a browser
  // whose only network is loopback never fires `online`, and a flaky link may not either.
  const resumePaused = () => { for (const item of items.values()) if (item.status === 'paused') item.resume?.(); };
  window.addEventListener('online', resumePaused);
  window.setInterval(resumePaused, retryEveryMs);
  showSignedIn();
  if (token) Promise.all([loadJobs(), feed.load()]).catch((err: Error) => say(err.message));
}

const feed = wireFeed(api, say);
main();
