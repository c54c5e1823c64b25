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
      limits: { uploadBytes: 200 * 1024 * 1024 },
      source: { parallelism: 1, retry: 5, backoffPolicy: 'exponential', backoffDelayMs: 200 },
    });
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
    ['SOURCE_BACKOFF_POLICY', 'random'],
    ['SOURCE_BACKOFF_DELAY', '200ms'],
    ['MAX_UPLOAD_BYTES', '-1'],
  ])('when %s is %j, then start fails naming the variable', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`${name}:`));
  });

  it('when a function runs on Knative without its backends, then it refuses to start and names what is missing', () => {
    expect(() => loadConfig({ K_SERVICE: 'upload' }, 'upload')).toThrow(/DATABASE_URL, MONGODB_URI, AMQP_URL, JWT_PUBLIC_KEY, DOWNLOAD_URL must be set for upload/);
    expect(() => loadConfig({}, 'upload')).not.toThrow(); // on one machine the embedded defaults apply
  });

  it('when the README configuration table is read, then it lists every variable the code reads, and no other', () => {
    const readme = fs.readFileSync(path.join(__dirname, '../README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Build'));
    const documented = [...section.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]);
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
