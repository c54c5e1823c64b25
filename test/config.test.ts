import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, deployedRequirements, envSchema, functionNames, loadConfig } from '../lib/core/config';

describe('configuration', () => {
  it('when nothing is set, then the embedded defaults apply', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8080,
      publicUrl: 'http://localhost:8080',
      downloadUrl: 'http://localhost:8080/download',
      databaseUrl: undefined,
      mongodbUri: undefined,
      amqpUrl: undefined,
      smtpUrl: undefined,
      jwt: { ttlSeconds: 3600, issuer: 'video2mp3', audience: 'video2mp3' },
      limits: { uploadBytes: 8 * 1024 ** 3, outputBytes: 1024 ** 3 },
      retention: { uploadSeconds: 86_400, mp3Seconds: 604_800, failedSourceSeconds: 86_400 },
      sources: {
        video: { parallelism: 4, retry: 7, backoffPolicy: 'exponential', backoffDelayMs: 500 },
        mp3: { parallelism: 1, retry: 7, backoffPolicy: 'exponential', backoffDelayMs: 500 },
      },
      maintenance: { intervalMs: 60_000, reconcileAfterMs: 900_000 },
      // Standard Webhooks' senders' schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
      webhooks: { allowPrivate: false, retryScheduleMs: [5000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000], timeoutMs: 5000 },
    });
    expect(loadConfig({ WEBHOOK_RETRY_SCHEDULE: '0s, 250ms,1m' }).webhooks.retryScheduleMs).toEqual([0, 250, 60_000]);
    expect(config.dataDir).toBe(path.resolve('.data'));
    expect(Object.isFrozen(config) && Object.isFrozen(config.jwt)).toBe(true);
  });

  it.each([
    ['PORT', 'eighty'],
    ['PORT', '70000'],
    ['DATABASE_URL', 'postgres://x/y'],
    ['MONGODB_URI', 'http://x'],
    ['AMQP_URL', 'localhost:5672'],
    ['SMTP_URL', 'mail.example.com'],
    ['JWT_TTL_SECONDS', '5'],
    ['JWT_PRIVATE_KEY', 'not a pem'],
    ['LINK_SECRET', 'short'],
    ['KEEP_SOURCE', 'maybe'],
    ['VIDEO_SOURCE_BACKOFF_POLICY', 'random'],
    ['MP3_SOURCE_BACKOFF_DELAY', '200ms'],
    ['VIDEO_SOURCE_PARALLELISM', '0'],
    ['MAX_UPLOAD_BYTES', '-1'],
    ['TRUST_PROXY', 'everyone'],
    ['TRUST_PROXY', '10.0.0.0/8; rm -rf'],
    ['MAX_JOBS_IN_FLIGHT', '0'],
    ['MAX_CONVERSION_SECONDS_PER_DAY', '10'],
    ['SIGNUP_MAX_PER_HOUR', '0'],
    ['REQUEST_TIMEOUT_SECONDS', '0'],
    ['WEBHOOK_RETRY_SCHEDULE', '5 minutes'],
    ['WEBHOOK_RETRY_SCHEDULE', '5s,,1h'],
  ])('when %s is %j, then start fails naming the variable', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`${name}:`));
  });

  it('when HOST and TRUST_PROXY are not set, then the public listener is loopback only and X-Forwarded-For is not believed', () => {
    expect(loadConfig({})).toMatchObject({ host: '127.0.0.1', trustProxy: false, quotas: { jobsInFlight: 3, conversionSecondsPerDay: 21_600 }, signup: { maxPerHour: 10 } });
    expect(loadConfig({ K_SERVICE: 'auth' }).host).toBe('0.0.0.0'); // Knative's queue-proxy reaches the container on the pod's network
    expect(loadConfig({ HOST: '0.0.0.0' }).host).toBe('0.0.0.0');
  });

  it.each([
    ['false', false],
    ['true', true],
    ['2', 2],
    ['loopback, 10.244.0.0/16', ['loopback', '10.244.0.0/16']],
    ['fd00::/8', ['fd00::/8']],
  ])('when TRUST_PROXY is %j, then it parses to %j', (value, expected) => {
    expect(loadConfig({ TRUST_PROXY: value }).trustProxy).toEqual(expected);
  });

  it('when metrics and tracing are configured, then metrics keep a port of their own and tracing is off without an endpoint', () => {
    expect(loadConfig({}).metrics).toEqual({ port: 9464, host: '127.0.0.1' });
    expect(loadConfig({ K_SERVICE: 'auth' }).metrics.host).toBe('0.0.0.0'); // Prometheus scrapes the pod's IP
    expect(loadConfig({ METRICS_PORT: '0' }).metrics.port).toBe(0);
    expect(() => loadConfig({ PORT: '9464' })).toThrow(/METRICS_PORT: must differ from PORT/);
    expect(loadConfig({}).otlpEndpoint).toBeUndefined();
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' }).otlpEndpoint).toBe('http://collector:4318');
    expect(() => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' })).toThrow(/OTEL_EXPORTER_OTLP_ENDPOINT:/);
  });

  it('when a function runs on Knative without its backends, then it refuses to start and names what is missing', () => {
    expect(() => loadConfig({ K_SERVICE: 'upload' }, 'upload')).toThrow(/DATABASE_URL, MONGODB_URI, AMQP_URL, JWT_PUBLIC_KEY, DOWNLOAD_URL must be set for upload/);
    expect(() => loadConfig({}, 'upload')).not.toThrow(); // on one machine the embedded defaults apply
  });

  it('when the README configuration table is read, then it lists every variable the code reads, and no other', () => {
    const readme = fs.readFileSync(path.join(__dirname, '../README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Build'));
    const documented = [...section.matchAll(/^\| `([A-Z0-9_]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(envSchema.shape).sort());
  });

  it('when the functions and their Knative requirements are listed, then they agree', () => {
    expect(Object.keys(deployedRequirements).sort()).toEqual([...functionNames].sort());
    for (const fn of functionNames) {
      for (const name of deployedRequirements[fn]) expect(Object.keys(envSchema.shape)).toContain(name);
      expect(fs.existsSync(path.join(__dirname, '../functions', fn, 'index.ts'))).toBe(true);
    }
  });
});
