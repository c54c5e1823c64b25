// video2mp3: sign up, log in, upload videos (resumable) or import them from URLs, follow, download and
// delete jobs, and manage the private podcast feed.
// Results go to stdout (text, or JSON with --json), progress and errors to stderr. Exit code 0 only
// when everything asked for succeeded — for uploads with --wait, when every job ended done.
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Api, CliError, type Job } from './api';
import { countdown, createReporter } from './progress';
import { loadSession, saveSession } from './session';
import { offersTus, uploadWithPost, uploadWithTus, type Accepted } from './upload';

const program = new Command('video2mp3')
  .description('Convert videos to MP3 with a video2mp3 service')
  .option('--json', 'print machine-readable JSON on stdout')
  .option('--url <url>', 'the service (default: VIDEO2MP3_URL, then the URL you logged in to)')
  .showHelpAfterError();

const json = () => Boolean(program.opts<{ json?: boolean }>().json);
const print = (text: string, data: unknown) => process.stdout.write(json() ? `${JSON.stringify(data)}\n` : `${text}\n`);

function api(): Api {
  const session = loadSession(program.opts<{ url?: string }>().url);
  if (!session.url) throw new CliError('no service URL: run `video2mp3 login --url URL --email EMAIL` or set VIDEO2MP3_URL');
  if (!session.token) throw new CliError('not logged in: run `video2mp3 login --url URL --email EMAIL` or set VIDEO2MP3_TOKEN');
  return new Api(session.url, session.token);
}

/** The password from VIDEO2MP3_PASSWORD, else asked on the terminal without echo. */
async function readPassword(): Promise<string> {
  if (process.env.VIDEO2MP3_PASSWORD) return process.env.VIDEO2MP3_PASSWORD;
  const stdin = process.stdin;
  if (!stdin.isTTY) throw new CliError('no terminal to ask for the password: set VIDEO2MP3_PASSWORD');
  process.stderr.write('Password: ');
  stdin.setRawMode(true);
  stdin.resume();
  stdin.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    let typed = '';
    const onData = (chars: string) => {
      for (const c of chars) {
        if (c === '\r' || c === '\n') {
          stdin.setRawMode(false);
          stdin.pause();
          stdin.off('data', onData);
          process.stderr.write('\n');
          resolve(typed);
          return;
        }
        if (c === '\u0003') {
          stdin.setRawMode(false);
          reject(new CliError('cancelled'));
          return;
        }
        typed = c === '\u007f' || c === '\b' ? typed.slice(0, -1) : typed + c;
      }
    };
    stdin.on('data', onData);
  });
}

for (const action of ['signup', 'login'] as const) {
  program.command(action)
    .description(action === 'signup' ? 'create an account, then log in' : 'log in; the token is kept in your config directory (mode 0600)')
    .requiredOption('--email <email>', 'your email')
    .action(async (opts: { email: string }) => {
      const url = (program.opts<{ url?: string }>().url ?? loadSession().url)?.replace(/\/+$/, '');
      if (!url) throw new CliError('give the service with --url URL (or VIDEO2MP3_URL)');
      const password = await readPassword();
      const client = new Api(url, undefined);
      if (action === 'signup') await client.credentials('signup', opts.email, password);
      const { token } = await client.credentials('login', opts.email, password);
      const file = saveSession({ url, token, email: opts.email });
      print(`${action === 'signup' ? 'Signed up and logged in' : 'Logged in'} as ${opts.email} (token saved in ${file})`, { email: opts.email, url, sessionFile: file });
    });
}

const positiveInt = (name: string) => (v: string) => {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number`);
  return v;
};

interface UploadOptions {
  bitrate?: string;
  quality?: string;
  sampleRate?: string;
  mono?: boolean;
  title?: string;
  loudness?: string;
  cover?: string;
  callbackUrl?: string;
  wait?: boolean;
  out: string;
}

const loudness = (v: string) => {
  if (v === 'podcast' || v === 'broadcast') return v;
  const lufs = Number(v);
  if (v.trim() === '' || !Number.isFinite(lufs) || lufs < -31 || lufs > -5) throw new InvalidArgumentError('loudness must be podcast, broadcast or a LUFS target from -31 to -5');
  return v;
};
const cover = (v: string) => {
  if (v === 'auto' || v === 'none' || /^frame@\d+(\.\d+)?$/.test(v)) return v;
  throw new InvalidArgumentError('cover must be auto, none or frame@SECONDS');
};

/** The MP3 options both `upload` and `import` take. */
function withMp3Options(command: Command): Command {
  return command
    .addOption(new Option('--bitrate <kbps>', 'constant bitrate, 32–320').argParser(positiveInt('bitrate')).conflicts('quality'))
    .addOption(new Option('--quality <0-9>', 'VBR quality, 0 best (default 2)').argParser(positiveInt('quality')))
    .option('--sample-rate <hz>', 'output sample rate (e.g. 44100)', positiveInt('sample-rate'))
    .option('--mono', 'one channel')
    .option('--title <title>', 'ID3 title')
    .option('--loudness <target>', 'even loudness: podcast (-16 LUFS), broadcast (-23 LUFS) or a LUFS target from -31 to -5', loudness)
    .option('--cover <cover>', 'cover art: auto (the video\'s own picture or a frame), none, or frame@SECONDS', cover)
    .option('--callback-url <url>', 'where the service POSTs each job\'s outcome (a signed webhook)')
    .option('--wait', 'follow each job to its end and download the MP3')
    .option('--out <dir>', 'where --wait puts the MP3s', '.');
}

/** The options as the service's field names. */
function fieldsOf(opts: UploadOptions): Record<string, string> {
  const options: Record<string, string> = {};
  if (opts.bitrate) options.bitrate = opts.bitrate;
  if (opts.quality) options.quality = opts.quality;
  if (opts.sampleRate) options.sampleRate = opts.sampleRate;
  if (opts.mono) options.channels = '1';
  if (opts.title) options.title = opts.title;
  if (opts.loudness) options.loudness = opts.loudness;
  if (opts.cover) options.cover = opts.cover;
  if (opts.callbackUrl) options.callbackUrl = opts.callbackUrl;
  return options;
}

interface Outcome {
  file: string;
  jobId?: string;
  status: Job['status'] | 'rejected';
  error?: string;
  mp3?: string;
}

const ended = (job: Job) => job.status !== 'importing' && job.status !== 'queued' && job.status !== 'converting';

/** A 429 without Retry-After is tried again after this; one asking to wait longer than the maximum is reported instead. */
const defaultRetrySeconds = 10;
const maxRetryWaitSeconds = 15 * 60;

withMp3Options(program.command('upload')
  .description('upload videos (resumable: rerun the same command to continue an interrupted upload)')
  .argument('<files...>', 'video files'))
  .action(async (files: string[], opts: UploadOptions) => {
    for (const f of files) if (!fs.statSync(f, { throwIfNoEntry: false })?.isFile()) throw new CliError(`${f}: no such file`);
    const client = api();
    const options = fieldsOf(opts);
    const send = (await offersTus(client)) ? uploadWithTus : uploadWithPost;
    const reporter = createReporter();
    const outcomes: Outcome[] = [];
    const follows: Promise<void>[] = [];
    try {
      for (const file of files) {
        const name = path.basename(file);
        const task = reporter.task(name);
        const outcome: Outcome = { file, status: 'rejected' };
        outcomes.push(outcome);
        let accepted: Accepted | undefined;
        while (!accepted) {
          try {
            accepted = await send(client, file, options, (p) => task.update('uploading', p), (p) => reporter.note(`${name}: resuming an interrupted upload at ${Math.floor(p)}%`));
          } catch (err) {
            if (!(err instanceof CliError) || err.status === 401 || err.status === undefined && /cannot reach/.test(err.message)) throw err;
            // A full queue (429) empties as jobs finish: wait as long as the service says, then go on.
            // A wait of hours (the day's quota is spent) is reported instead.
            const wait = err.status === 429 ? err.retryAfterSeconds ?? defaultRetrySeconds : undefined;
            if (wait !== undefined && wait <= maxRetryWaitSeconds) {
              reporter.note(`${err.message}; waiting ${wait} s as the service asks (Retry-After), then trying again`);
              await countdown(wait, (p) => task.update('waiting for the service', p));
              continue;
            }
            outcome.error = err.message;
            task.update('rejected');
            reporter.note(`error: ${err.message}`);
            break;
          }
        }
        if (!accepted) continue;
        outcome.jobId = accepted.jobId;
        outcome.status = 'queued';
        task.update('uploaded', 100);
        if (opts.wait) follows.push(follow(client, accepted, outcome, task, opts.out));
      }
      await Promise.all(follows);
    } finally {
      reporter.stop();
    }
    for (const o of outcomes) {
      if (!json()) process.stdout.write(`${o.file}: ${o.status}${o.jobId ? ` (job ${o.jobId})` : ''}${o.mp3 ? ` → ${o.mp3}` : ''}${o.error ? ` — ${o.error}` : ''}\n`);
    }
    if (json()) print('', { uploads: outcomes });
    const ok = outcomes.every((o) => (opts.wait ? o.status === 'done' : o.jobId !== undefined));
    if (!ok) process.exitCode = 1;
  });

/** Polls a job once a second until it ends; downloads the MP3 when done. */
async function follow(client: Api, accepted: Accepted, outcome: Outcome, task: { update(phase: string, percent?: number): void }, out: string) {
  for (;;) {
    const job = await client.json<Job>(accepted.statusUrl, { what: `job ${accepted.jobId}` });
    outcome.status = job.status;
    if (job.status === 'converting') task.update('converting', job.progress ?? 0);
    else if (job.status === 'importing') task.update('importing', job.progress ?? 0);
    else if (job.status === 'queued') task.update('queued', 0);
    if (ended(job)) {
      if (job.status === 'done') {
        task.update('downloading', 100);
        outcome.mp3 = await client.download(job, out);
        task.update('done', 100);
      } else {
        outcome.error = job.error ?? job.status;
        task.update(job.status, 100);
      }
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

withMp3Options(program.command('import')
  .description('have the service download a video from a URL and convert it')
  .argument('<url>', 'an http(s) URL of a video file'))
  .action(async (url: string, opts: UploadOptions) => {
    const client = api();
    const fields = fieldsOf(opts);
    let accepted: Accepted | undefined;
    while (!accepted) {
      try {
        accepted = await client.json<Accepted>('/upload/', {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ url, ...fields }), what: 'import',
        });
      } catch (err) {
        // As for an upload: a full queue (429) empties as jobs finish; a wait of hours is reported instead.
        const wait = err instanceof CliError && err.status === 429 ? err.retryAfterSeconds ?? defaultRetrySeconds : undefined;
        if (wait === undefined || wait > maxRetryWaitSeconds) throw err;
        process.stderr.write(`${(err as Error).message}; waiting ${wait} s as the service asks (Retry-After), then trying again\n`);
        await new Promise((resolve) => setTimeout(resolve, wait * 1000));
      }
    }
    const outcome: Outcome = { file: url, jobId: accepted.jobId, status: 'importing' };
    if (opts.wait) {
      const reporter = createReporter();
      try {
        await follow(client, accepted, outcome, reporter.task(new URL(url).pathname.split('/').at(-1) || url), opts.out);
      } finally {
        reporter.stop();
      }
    }
    print(`${url}: ${outcome.status} (job ${accepted.jobId})${outcome.mp3 ? ` → ${outcome.mp3}` : ''}${outcome.error ? ` — ${outcome.error}` : ''}`, outcome);
    if (opts.wait && outcome.status !== 'done') process.exitCode = 1;
  });

const feed = program.command('feed').description('your private podcast feed: every done MP3, for a podcast app');

feed.command('show')
  .description('whether you have a feed, since when, and its URL if this computer created it')
  .action(async () => {
    const client = api();
    const { createdAt } = await client.json<{ createdAt: string }>('/download/feed', { what: 'feed' })
      .catch((err: unknown) => { throw err instanceof CliError && err.status === 404 ? new CliError('no feed yet: run `video2mp3 feed rotate` to create one') : err; });
    const url = loadSession(program.opts<{ url?: string }>().url).feedUrl;
    print(url ? `${url}\n(created ${createdAt})` : `a feed exists since ${createdAt}; its URL is shown only when made: run \`video2mp3 feed rotate\` for a new one`, { url: url ?? null, createdAt });
  });

feed.command('rotate')
  .description('create the feed, or replace its URL (the old one stops working)')
  .action(async () => {
    const client = api();
    const { url, createdAt } = await client.json<{ url: string; createdAt: string }>('/download/feed', { method: 'POST', what: 'feed' });
    const session = loadSession(program.opts<{ url?: string }>().url);
    if (session.url && !process.env.VIDEO2MP3_TOKEN) saveSession({ ...session, url: session.url, feedUrl: url });
    print(url, { url, createdAt });
  });

feed.command('revoke')
  .description('delete the feed: its URL stops working')
  .action(async () => {
    await api().request('/download/feed', { method: 'DELETE', what: 'feed' });
    const session = loadSession(program.opts<{ url?: string }>().url);
    if (session.url && session.feedUrl && !process.env.VIDEO2MP3_TOKEN) saveSession({ ...session, url: session.url, feedUrl: undefined });
    print('feed revoked', { revoked: true });
  });

const describeJob = (j: Job) => `${j.jobId}  ${j.status.padEnd(10)}  ${j.createdAt}  ${j.filename}${(j.status === 'converting' || j.status === 'importing') && j.progress !== undefined ? `  ${j.progress}%` : ''}${j.error ? `  (${j.error})` : ''}`;

program.command('jobs')
  .description('list your jobs, newest first')
  .action(async () => {
    const client = api();
    const jobs: Job[] = [];
    let cursor: string | null = null;
    do {
      const page: { jobs: Job[]; nextCursor: string | null } = await client.json(`/download/jobs?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { what: 'jobs' });
      jobs.push(...page.jobs);
      cursor = page.nextCursor;
    } while (cursor);
    print(jobs.length ? jobs.map(describeJob).join('\n') : 'no jobs', { jobs });
  });

program.command('status')
  .description('one job; exit code 0 only when it is done')
  .argument('<id>', 'job id')
  .action(async (id: string) => {
    const job = await api().job(id);
    print(describeJob(job), job);
    if (job.status !== 'done') process.exitCode = 1;
  });

program.command('download')
  .description("download a done job's MP3")
  .argument('<id>', 'job id')
  .option('--out <dir>', 'directory', '.')
  .action(async (id: string, opts: { out: string }) => {
    const client = api();
    const file = await client.download(await client.job(id), opts.out);
    print(file, { jobId: id, file });
  });

program.command('rm')
  .description('delete a job, its video and its MP3')
  .argument('<id>', 'job id')
  .action(async (id: string) => {
    await api().request(`/download/jobs/${encodeURIComponent(id)}`, { method: 'DELETE', what: `job ${id}` });
    print(`deleted ${id}`, { jobId: id, deleted: true });
  });

// A command is over when its promise settles: exit then, so no pooled connection or timer keeps the
// CLI waiting (stdout and stderr are synchronous for files, pipes and terminals on Linux).
program.parseAsync()
  .catch((err: unknown) => {
    const message = err instanceof CliError ? err.message : err instanceof Error ? err.message : String(err);
    if (json()) process.stdout.write(`${JSON.stringify({ error: message })}\n`);
    process.stderr.write(`video2mp3: ${message}\n`);
    process.exitCode = 1;
  })
  .finally(() => process.exit());
