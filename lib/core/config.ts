/**
 * lib/core owns what every other folder stands on: the configuration (parsed once, here), the logger,
 * the domain errors and the lazily created per-instance clients. It imports no other lib folder.
 */
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { configureLog } from './log';

/** The five functions, by the name each registers with functions-framework. */
export const functionNames = ['auth', 'upload', 'download', 'convert', 'notify'] as const;
export type FunctionName = (typeof functionNames)[number];

const mib = 1024 * 1024;
const gib = 1024 * mib;
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');
const urlWith = (...schemes: string[]) =>
  z.string().refine((v) => schemes.some((s) => v.startsWith(`${s}://`)), `must be a ${schemes.join(' or ')} URL`);
const pem = z.string().refine((v) => v.includes('-----BEGIN'), 'must be a PEM block').transform((v) => v.replace(/\\n/g, '\n'));
const backoffPolicy = z.enum(['exponential', 'linear']);
// TRUST_PROXY: false/true, a number of proxy hops in front, or a comma-separated list of proxy
// addresses and CIDRs (what express's `trust proxy` accepts).
const trustProxy = z.string().trim().refine(
  (v) => /^(true|false|\d{1,2})$/.test(v) || v.split(',').every((p) => /^[0-9a-fA-F.:]+(\/\d{1,3})?$|^(loopback|linklocal|uniquelocal)$/.test(p.trim())),
  'must be true, false, a hop count, or comma-separated addresses/CIDRs',
).transform((v): boolean | number | string[] => (v === 'true' ? true : v === 'false' ? false : /^\d+$/.test(v) ? Number(v) : v.split(',').map((p) => p.trim())));
// A list of waits such as `5s,5m,30m,2h` (units ms, s, m, h), in milliseconds.
const durationUnits = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
const durationList = z.string().trim().regex(/^(\d+(ms|s|m|h))(\s*,\s*\d+(ms|s|m|h))*$/, 'must be a comma-separated list of durations such as 5s,5m,2h')
  .transform((v) => v.split(',').map((d) => {
    const [, amount, unit] = /^(\d+)(ms|s|m|h)$/.exec(d.trim())!;
    return Number(amount) * durationUnits[unit as keyof typeof durationUnits];
  }));
const isoDuration = z.string().regex(/^PT(\d+(\.\d+)?S|\d+M(\d+(\.\d+)?S)?)$/, 'must be an ISO-8601 duration such as PT0.2S or PT1M');

/**
 * Every environment variable the product reads. Keep README's configuration table and knative/ in step:
 * test/config.test.ts and test/knative.test.ts compare them with this list.
 */
export const envSchema = z.object({
  PORT: int(1, 65535).default(8080),
  HOST: z.string().min(1).optional(),
  TRUST_PROXY: trustProxy.default(false),
  REQUEST_TIMEOUT_SECONDS: int(1, 3600).default(60),
  HEADERS_TIMEOUT_SECONDS: int(1, 600).default(20),
  DATA_DIR: z.string().min(1).default('./.data'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  PUBLIC_URL: urlWith('http', 'https').optional(),
  DOWNLOAD_URL: urlWith('http', 'https').optional(),
  AUTH_URL: urlWith('http', 'https').optional(),
  UPLOAD_URL: urlWith('http', 'https').optional(),
  DATABASE_URL: urlWith('mysql').optional(),
  MONGODB_URI: urlWith('mongodb', 'mongodb+srv').optional(),
  AMQP_URL: urlWith('amqp', 'amqps').optional(),
  SMTP_URL: urlWith('smtp', 'smtps').optional(),
  MAIL_FROM: z.string().min(3).default('video2mp3 <no-reply@localhost>'),
  JWT_PRIVATE_KEY: pem.optional(),
  JWT_PUBLIC_KEY: pem.optional(),
  JWT_ISSUER: z.string().min(1).default('video2mp3'),
  JWT_AUDIENCE: z.string().min(1).default('video2mp3'),
  JWT_TTL_SECONDS: int(60, 86_400).default(3600),
  LINK_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  LINK_TTL_SECONDS: int(60, 30 * 86_400).default(7 * 86_400),
  LOGIN_MAX_FAILURES: int(1, 1000).default(5),
  LOGIN_WINDOW_SECONDS: int(1, 86_400).default(900),
  SIGNUP_MAX_PER_HOUR: int(1, 100_000).default(10),
  MAX_JOBS_IN_FLIGHT: int(1, 1000).default(3),
  MAX_JOBS_QUEUED: int(1, 100_000).default(100),
  MAX_CONVERSION_SECONDS_PER_DAY: int(60, 30 * 86_400).default(6 * 3600),
  MAX_UPLOAD_BYTES: int(1024, 64 * gib).default(8 * gib),
  MAX_DURATION_SECONDS: int(1, 6 * 3600).default(3 * 3600),
  MAX_OUTPUT_BYTES: int(1024, 4 * gib).default(gib),
  UPLOAD_EXPIRY_SECONDS: int(1, 30 * 86_400).default(86_400),
  MP3_RETENTION_SECONDS: int(60, 365 * 86_400).optional(),
  CONVERT_TIMEOUT_SECONDS: int(10, 3600).default(540),
  CONVERT_PARALLELISM: int(1, 64).optional(),
  CONVERT_LEASE_SECONDS: int(2, 3600).default(30),
  KEEP_SOURCE: bool.default(false),
  // The local stand-in for each RabbitmqSource (`video`, `mp3`), with its manifest's values as defaults
  // (knative/50-sources.yaml; test/knative.test.ts compares them).
  VIDEO_SOURCE_PARALLELISM: int(1, 1000).default(4),
  VIDEO_SOURCE_RETRY: int(0, 100).default(7),
  VIDEO_SOURCE_BACKOFF_POLICY: backoffPolicy.default('exponential'),
  VIDEO_SOURCE_BACKOFF_DELAY: isoDuration.default('PT0.5S'),
  MP3_SOURCE_PARALLELISM: int(1, 1000).default(1),
  MP3_SOURCE_RETRY: int(0, 100).default(7),
  MP3_SOURCE_BACKOFF_POLICY: backoffPolicy.default('exponential'),
  MP3_SOURCE_BACKOFF_DELAY: isoDuration.default('PT0.5S'),
  MAINTENANCE_INTERVAL_SECONDS: int(1, 86_400).default(60),
  RECONCILE_AFTER_SECONDS: int(1, 7 * 86_400).default(900),
  WEBHOOK_ALLOW_PRIVATE: bool.default(false),
  WEBHOOK_RETRY_SCHEDULE: durationList.prefault('5s,5m,30m,2h,5h,10h,10h'),
  IMPORT_ALLOW_PRIVATE: z.string().trim().refine(
    (v) => /^(true|false|1|0)$/.test(v) || v.split(',').every((p) => net.isIP(p.trim().split('/')[0]!) !== 0 && /^[^/]+(\/\d{1,3})?$/.test(p.trim())),
    'must be true, false, or comma-separated addresses/CIDRs',
  ).default('false'),
  IMPORT_CONNECT_TIMEOUT_SECONDS: int(1, 300).default(10),
  IMPORT_IDLE_TIMEOUT_SECONDS: int(1, 3600).default(30),
  IMPORT_TIMEOUT_SECONDS: int(10, 24 * 3600).default(900),
  WEB_ORIGIN: z.string().refine((v) => v.split(',').every((o) => /^https?:\/\/[^/\s]+$/.test(o.trim())), 'must be origins such as https://app.example.com, comma-separated, without a path').optional(),
  METRICS_PORT: int(0, 65535).default(9464),
  OTEL_EXPORTER_OTLP_ENDPOINT: urlWith('http', 'https').optional(),
  K_SERVICE: z.string().optional(),
});
export type Env = z.infer<typeof envSchema>;
export type EnvName = keyof Env;

/**
 * On Knative (K_SERVICE is set by Serving) there are no embedded defaults: each function needs its
 * real backends, or it would quietly keep users, files and keys inside one pod.
 */
export const deployedRequirements: Record<FunctionName, EnvName[]> = {
  auth: ['DATABASE_URL', 'JWT_PRIVATE_KEY'],
  upload: ['DATABASE_URL', 'MONGODB_URI', 'AMQP_URL', 'JWT_PUBLIC_KEY', 'DOWNLOAD_URL'],
  download: ['DATABASE_URL', 'MONGODB_URI', 'JWT_PUBLIC_KEY', 'LINK_SECRET', 'DOWNLOAD_URL'],
  convert: ['DATABASE_URL', 'MONGODB_URI', 'AMQP_URL'],
  notify: ['DATABASE_URL', 'SMTP_URL', 'LINK_SECRET', 'DOWNLOAD_URL'],
};

/** A RabbitmqSource's `parallelism` and `delivery` settings. */
export interface SourceSettings {
  /** HTTP requests in flight (prefetch is fixed at 100, as in the real adapter). */
  parallelism: number;
  retry: number;
  backoffPolicy: 'exponential' | 'linear';
  /** Retry n waits backoffDelayMs × 2^n (exponential) or × n (linear), n = 1…retry. */
  backoffDelayMs: number;
}

export interface Config {
  port: number;
  /** The public listener's address: loopback on one machine unless HOST says otherwise; every interface on Knative. */
  host: string;
  /** Whose X-Forwarded-For to believe (express `trust proxy`): false = nobody, the socket's peer is the client. */
  trustProxy: boolean | number | string[];
  dataDir: string;
  logLevel: Env['LOG_LEVEL'];
  /** Where clients reach the stack; links and Location headers are built from it. */
  publicUrl: string;
  downloadUrl: string;
  /** Where the web page finds auth and upload (download serves the page when deployed). */
  authUrl: string;
  uploadUrl: string;
  databaseUrl?: string;
  mongodbUri?: string;
  amqpUrl?: string;
  smtpUrl?: string;
  mailFrom: string;
  jwt: { privateKey?: string; publicKey?: string; issuer: string; audience: string; ttlSeconds: number };
  links: { secret?: string; ttlSeconds: number };
  login: { maxFailures: number; windowSeconds: number };
  signup: { maxPerHour: number };
  /**
   * Per user: at most jobsQueued jobs waiting or converting (more is refused), of which at most
   * jobsInFlight convert at once (the rest wait their turn: docs/scheduling.md), and seconds of media a day.
   */
  quotas: { jobsInFlight: number; jobsQueued: number; conversionSecondsPerDay: number };
  limits: { uploadBytes: number; durationSeconds: number; outputBytes: number };
  /**
   * How long things are kept: an unfinished resumable upload (then its bytes are deleted), a done
   * job's MP3 (then the job is `expired`), and the source video of a failed job.
   */
  retention: { uploadSeconds: number; mp3Seconds: number; failedSourceSeconds: number };
  /**
   * How long each kind of outside work may take, in one place: connecting to a backend fails within
   * its connect timeout (so a request answers 503 rather than hanging), a conversion is stopped
   * after convertMs, one email send after mailSendMs, and shutdown waits shutdownMs for requests.
   */
  timeouts: {
    dbConnectMs: number;
    dbAcquireMs: number;
    storageConnectMs: number;
    brokerConnectMs: number;
    mailStepMs: number;
    mailSendMs: number;
    convertMs: number;
    /** A converter's claim on a job lapses this long after its last renewal (it renews every third of it). */
    convertLeaseMs: number;
    shutdownMs: number;
    /** A request (headers and body) must arrive within these; answered 408. Uploads have their own idle timeout. */
    requestMs: number;
    headersMs: number;
  };
  /** ffmpeg.wasm instances a conversion may use: CONVERT_PARALLELISM, at most the available cores. */
  convertParallelism: number;
  keepSource: boolean;
  /**
   * Webhooks: callback URLs on loopback, link-local and private addresses are refused unless
   * allowPrivate. After a failed attempt n, attempt n + 1 is due `retryScheduleMs[n - 1]` later (on the
   * first tick after that); after the last, they give up. Each attempt gets `timeoutMs` in all.
   */
  webhooks: { allowPrivate: boolean; retryScheduleMs: readonly number[]; timeoutMs: number; tickMs: number };
  /**
   * Imports from a URL: private addresses refused unless allowPrivate (at every redirect hop); the
   * connection must open within connectMs, bytes never pause longer than idleMs, the whole download
   * ends within totalMs.
   */
  imports: { allowPrivate: PrivateAllowance; connectMs: number; idleMs: number; totalMs: number };
  /** The local stand-ins for the RabbitmqSources, by source (= queue) name. */
  sources: Readonly<{ video: SourceSettings; mp3: SourceSettings }>;
  /**
   * The scheduled maintenance: how often the local stack ticks (on Knative the PingSource's schedule
   * decides), and how long a job may wait without progress, or an outcome without its email, before the
   * reconciler publishes its event again (longer than a conversion may run, so a live one is left alone).
   */
  maintenance: { intervalMs: number; reconcileAfterMs: number };
  /** Origins of the web page allowed to call the API from another origin (CORS); empty: none. */
  webOrigins: readonly string[];
  /**
   * Prometheus metrics, on a listener of their own that the public route never reaches: loopback on one
   * machine, every interface in a pod (docs/operations.md). Port 0 picks a free port.
   */
  metrics: { port: number; host: string };
  /** Where OTLP/HTTP traces go; undefined: tracing is off and its libraries are never loaded. */
  otlpEndpoint?: string;
  /** The Knative service name when deployed; undefined on one machine. */
  service?: string;
}

/** Private addresses a server-side request may reach: all (true), none (false), or these networks. */
export type PrivateAllowance = boolean | net.BlockList;

function parseAllowance(value: string): PrivateAllowance {
  if (/^(true|1)$/.test(value)) return true;
  if (/^(false|0)$/.test(value)) return false;
  const list = new net.BlockList();
  for (const part of value.split(',')) {
    const [address, prefix] = part.trim().split('/') as [string, string | undefined];
    const family = net.isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (prefix === undefined) list.addAddress(address, family);
    else list.addSubnet(address, Number(prefix), family);
  }
  return list;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function parseIsoSeconds(value: string): number {
  const m = /^PT(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$/.exec(value);
  return ((Number(m?.[1] ?? 0) * 60) + Number(m?.[2] ?? 0)) * 1000;
}

/**
 * Parses the environment once into a frozen Config. Fails with a message naming the variable when a
 * setting is malformed, or (with `fn`, on Knative) when one that function needs is missing.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, fn?: FunctionName): Readonly<Config> {
  const defined = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = envSchema.safeParse(defined);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  const e = parsed.data;
  if (fn && e.K_SERVICE) {
    const missing = deployedRequirements[fn].filter((name) => e[name] === undefined);
    if (missing.length > 0) {
      throw new ConfigError(`${missing.join(', ')} must be set for ${fn} on Knative (no embedded defaults there)`);
    }
  }
  if (e.METRICS_PORT !== 0 && e.METRICS_PORT === e.PORT) throw new ConfigError(`invalid configuration: METRICS_PORT: must differ from PORT (${e.PORT})`);
  const publicUrl = (e.PUBLIC_URL ?? `http://localhost:${e.PORT}`).replace(/\/+$/, '');
  return Object.freeze({
    port: e.PORT,
    host: e.HOST ?? (e.K_SERVICE ? '0.0.0.0' : '127.0.0.1'),
    trustProxy: Array.isArray(e.TRUST_PROXY) ? Object.freeze(e.TRUST_PROXY) as string[] : e.TRUST_PROXY,
    dataDir: path.resolve(e.DATA_DIR),
    logLevel: e.LOG_LEVEL,
    publicUrl,
    downloadUrl: (e.DOWNLOAD_URL ?? `${publicUrl}/download`).replace(/\/+$/, ''),
    authUrl: (e.AUTH_URL ?? `${publicUrl}/auth`).replace(/\/+$/, ''),
    uploadUrl: (e.UPLOAD_URL ?? `${publicUrl}/upload`).replace(/\/+$/, ''),
    databaseUrl: e.DATABASE_URL,
    mongodbUri: e.MONGODB_URI,
    amqpUrl: e.AMQP_URL,
    smtpUrl: e.SMTP_URL,
    mailFrom: e.MAIL_FROM,
    jwt: Object.freeze({
      privateKey: e.JWT_PRIVATE_KEY,
      publicKey: e.JWT_PUBLIC_KEY,
      issuer: e.JWT_ISSUER,
      audience: e.JWT_AUDIENCE,
      ttlSeconds: e.JWT_TTL_SECONDS,
    }),
    links: Object.freeze({ secret: e.LINK_SECRET, ttlSeconds: e.LINK_TTL_SECONDS }),
    login: Object.freeze({ maxFailures: e.LOGIN_MAX_FAILURES, windowSeconds: e.LOGIN_WINDOW_SECONDS }),
    signup: Object.freeze({ maxPerHour: e.SIGNUP_MAX_PER_HOUR }),
    quotas: Object.freeze({ jobsInFlight: e.MAX_JOBS_IN_FLIGHT, jobsQueued: e.MAX_JOBS_QUEUED, conversionSecondsPerDay: e.MAX_CONVERSION_SECONDS_PER_DAY }),
    limits: Object.freeze({
      uploadBytes: e.MAX_UPLOAD_BYTES,
      durationSeconds: e.MAX_DURATION_SECONDS,
      outputBytes: e.MAX_OUTPUT_BYTES,
    }),
    retention: Object.freeze({
      uploadSeconds: e.UPLOAD_EXPIRY_SECONDS,
      mp3Seconds: e.MP3_RETENTION_SECONDS ?? e.LINK_TTL_SECONDS,
      failedSourceSeconds: 86_400,
    }),
    timeouts: Object.freeze({
      dbConnectMs: 5000,
      dbAcquireMs: 10_000,
      storageConnectMs: 5000,
      brokerConnectMs: 5000,
      mailStepMs: 10_000,
      mailSendMs: 20_000,
      convertMs: e.CONVERT_TIMEOUT_SECONDS * 1000,
      convertLeaseMs: e.CONVERT_LEASE_SECONDS * 1000,
      shutdownMs: 30_000,
      requestMs: e.REQUEST_TIMEOUT_SECONDS * 1000,
      headersMs: e.HEADERS_TIMEOUT_SECONDS * 1000,
    }),
    convertParallelism: Math.min(e.CONVERT_PARALLELISM ?? os.availableParallelism(), os.availableParallelism()),
    keepSource: e.KEEP_SOURCE,
    webhooks: Object.freeze({ allowPrivate: e.WEBHOOK_ALLOW_PRIVATE, retryScheduleMs: Object.freeze(e.WEBHOOK_RETRY_SCHEDULE), timeoutMs: 5000, tickMs: 5000 }),
    imports: Object.freeze({
      allowPrivate: parseAllowance(e.IMPORT_ALLOW_PRIVATE),
      connectMs: e.IMPORT_CONNECT_TIMEOUT_SECONDS * 1000,
      idleMs: e.IMPORT_IDLE_TIMEOUT_SECONDS * 1000,
      totalMs: e.IMPORT_TIMEOUT_SECONDS * 1000,
    }),
    sources: Object.freeze({
      video: Object.freeze({
        parallelism: e.VIDEO_SOURCE_PARALLELISM,
        retry: e.VIDEO_SOURCE_RETRY,
        backoffPolicy: e.VIDEO_SOURCE_BACKOFF_POLICY,
        backoffDelayMs: parseIsoSeconds(e.VIDEO_SOURCE_BACKOFF_DELAY),
      }),
      mp3: Object.freeze({
        parallelism: e.MP3_SOURCE_PARALLELISM,
        retry: e.MP3_SOURCE_RETRY,
        backoffPolicy: e.MP3_SOURCE_BACKOFF_POLICY,
        backoffDelayMs: parseIsoSeconds(e.MP3_SOURCE_BACKOFF_DELAY),
      }),
    }),
    maintenance: Object.freeze({
      intervalMs: e.MAINTENANCE_INTERVAL_SECONDS * 1000,
      reconcileAfterMs: e.RECONCILE_AFTER_SECONDS * 1000,
    }),
    metrics: Object.freeze({ port: e.METRICS_PORT, host: e.K_SERVICE ? '0.0.0.0' : '127.0.0.1' }),
    otlpEndpoint: e.OTEL_EXPORTER_OTLP_ENDPOINT?.replace(/\/+$/, ''),
    webOrigins: Object.freeze((e.WEB_ORIGIN ?? '').split(',').map((o) => o.trim()).filter(Boolean)),
    service: e.K_SERVICE,
  });
}

let current: Readonly<Config> | undefined;

/** The process's configuration, parsed on first use. */
export function getConfig(): Readonly<Config> {
  if (!current) setConfig(loadConfig());
  return current!;
}

/** Replaces the process's configuration (the local stack and tests set it before anything runs). */
export function setConfig(config: Readonly<Config>): void {
  current = config;
  configureLog(config);
}
