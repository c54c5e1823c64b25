// Property: whatever a client sends to any route — path, query, headers, body, token — the answer is
// never a 5xx, and every error is the JSON error body. fast-check on the embedded stack (the public
// listener and the event receivers' loopback listener), bounded in time; a failure prints the
// shrunk request and the seed to replay it.
import fc from 'fast-check';
import { HTTP } from 'cloudevents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { conversionSucceeded, videoUploaded } from '../lib/messaging/events';
import { readFixture } from './fixtures';
import { newUser, startStack, type Stack, type TestUser } from './support/stack';

type Method = 'GET' | 'POST' | 'DELETE' | 'PUT';
interface Route { listener: 'public' | 'internal'; method: Method; path: string }

// Every route of the five functions; `:x` is a path parameter the fuzzer fills.
const routes: Route[] = [
  { listener: 'public', method: 'POST', path: '/auth/signup' },
  { listener: 'public', method: 'POST', path: '/auth/login' },
  { listener: 'public', method: 'POST', path: '/auth/validate' },
  { listener: 'public', method: 'GET', path: '/auth/.well-known/jwks.json' },
  { listener: 'public', method: 'POST', path: '/upload/' },
  { listener: 'public', method: 'GET', path: '/download/jobs' },
  { listener: 'public', method: 'GET', path: '/download/jobs/:x' },
  { listener: 'public', method: 'GET', path: '/download/jobs/:x/mp3' },
  { listener: 'public', method: 'DELETE', path: '/download/jobs/:x' },
  { listener: 'public', method: 'GET', path: '/download/links/:x' },
  { listener: 'public', method: 'GET', path: '/download/jobs/:x/cover' },
  { listener: 'public', method: 'GET', path: '/download/jobs/:x/chapters' },
  { listener: 'public', method: 'POST', path: '/download/feed' },
  { listener: 'public', method: 'DELETE', path: '/download/feed' },
  { listener: 'public', method: 'GET', path: '/download/feed/:x' },
  { listener: 'public', method: 'GET', path: '/download/feed/:x/AAAAAAAAAAAAAAAAAAAAAA.mp3' },
  { listener: 'public', method: 'GET', path: '/download/feed/:x/AAAAAAAAAAAAAAAAAAAAAA/chapters.json' },
  { listener: 'public', method: 'GET', path: '/:x' },
  { listener: 'internal', method: 'POST', path: '/convert/' },
  { listener: 'internal', method: 'POST', path: '/notify/' },
];

const printable = (max: number) => fc.stringMatching(new RegExp(`^[\\x20-\\x7e]{0,${max}}$`));
const segment = fc.oneof(
  fc.constantFrom('%ZZ', '%', '%C0%AF', '%E0%A4%A', '%00', '%2F..%2F', '..', '.', '%F0%9F%98%80', 'AAAAAAAAAAAAAAAAAAAAAA', 'a.b.c'),
  fc.webSegment(),
  fc.stringMatching(/^[A-Za-z0-9_%.~-]{0,40}$/),
);

describe('fuzzing every route on the embedded stack', () => {
  let stack: Stack;
  let user: TestUser;
  let otherJob: string;

  beforeAll(async () => {
    stack = await startStack();
    user = await newUser(stack);
    const res = await fetch(`${stack.url}/upload/`, { method: 'POST', headers: { ...user.auth, 'content-type': 'video/mp4', 'x-filename': 'a.mp4' }, body: readFixture('mp4') });
    otherJob = ((await res.json()) as { jobId: string }).jobId;
  });
  afterAll(() => stack?.close());

  it('when any request is sent, then the answer is below 500 and any error is a JSON error body', async () => {
    const event = (kind: 'video' | 'outcome', jobId: string) => HTTP.binary(kind === 'video'
      ? videoUploaded({ jobId, owner: user.id, email: user.email, filename: 'x.mp4', videoBlobId: 'b', options: {} }, 'fuzz')
      : conversionSucceeded({ jobId, owner: user.id, email: user.email, filename: 'x.mp4', mp3BlobId: 'b', durationSeconds: 1, bytes: 1 }));

    const authorization = fc.oneof(
      fc.constant(undefined),
      fc.constant(user.auth.authorization),
      fc.constant('Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.AAAA.AAAA'),
      printable(80).map((s) => `Bearer ${s}`),
      printable(60).map((s) => `Basic ${Buffer.from(s).toString('base64')}`),
      printable(80),
    );
    const contentType = fc.oneof(
      fc.constant(undefined),
      fc.constantFrom('application/json', 'multipart/form-data; boundary=XX', 'multipart/form-data', 'video/mp4', 'application/octet-stream',
        'text/plain', 'application/x-www-form-urlencoded', 'application/cloudevents+json', 'application/json; charset=latin1'),
      printable(40),
    );
    const body = fc.oneof(
      fc.constant(undefined),
      fc.jsonValue().map((v) => JSON.stringify(v)),
      fc.record({ email: fc.oneof(fc.emailAddress(), printable(300)), password: printable(40) }).map((v) => JSON.stringify(v)),
      fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)),
      fc.tuple(printable(30), fc.uint8Array({ maxLength: 256 })).map(([name, data]) => Buffer.concat([
        Buffer.from(`--XX\r\nContent-Disposition: form-data; name="file"; filename="${name.replace(/"/g, '')}"\r\nContent-Type: video/mp4\r\n\r\n`), Buffer.from(data),
      ])),
      fc.constant(readFixture('mp4')),
    );
    const extraHeaders = fc.record({
      range: fc.option(fc.oneof(printable(30), fc.constantFrom('bytes=0-', 'bytes=-1', 'bytes=5-1', 'bytes=0-1,3-4', 'bytes=99999999999-'))),
      'if-none-match': fc.option(printable(30)),
      'x-filename': fc.option(printable(60)),
      'x-forwarded-for': fc.option(printable(40)),
      'ce-type': fc.option(fc.constantFrom('io.github.video2mp3.video.uploaded', 'io.github.video2mp3.conversion.succeeded', 'x')),
      'ce-specversion': fc.option(fc.constantFrom('1.0', '0.3', 'x')),
      'ce-id': fc.option(printable(20)),
      'ce-source': fc.option(printable(20)),
    }, { requiredKeys: [] });

    const request = fc.record({
      route: fc.constantFrom(...routes),
      param: segment,
      query: fc.option(fc.webQueryParameters()),
      authorization,
      contentType,
      body,
      extraHeaders,
      event: fc.option(fc.tuple(fc.constantFrom('video' as const, 'outcome' as const), fc.oneof(fc.constant(otherJob), segment))),
    });

    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const base = r.route.listener === 'public' ? stack.url : stack.internalUrl;
        const url = `${base}${r.route.path.replace(':x', r.param)}${r.query ? `?${r.query}` : ''}`;
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(r.extraHeaders)) if (typeof v === 'string') headers[k] = v;
        if (r.authorization !== undefined) headers.authorization = r.authorization;
        if (r.contentType !== undefined) headers['content-type'] = r.contentType;
        let payload: string | Buffer | undefined = r.body;
        if (r.event) {
          const e = event(r.event[0], r.event[1]);
          Object.assign(headers, e.headers as Record<string, string>);
          payload = e.body as string;
        }
        const withBody = r.route.method !== 'GET' && r.route.method !== 'DELETE';
        let res: Response;
        try {
          res = await fetch(url, { method: r.route.method, headers, body: withBody ? payload : undefined });
        } catch (err) {
          // The client refused to build the request (an invalid URL or header): nothing reached the server.
          if (err instanceof TypeError && !/fetch failed/.test(err.message)) return;
          throw err;
        }
        const text = await res.text();
        expect(res.status, `${r.route.method} ${url} → ${res.status} ${text.slice(0, 200)}`).toBeLessThan(500);
        if (res.status >= 400) {
          expect(res.headers.get('content-type'), `${r.route.method} ${url}`).toContain('application/json');
          expect(JSON.parse(text)).toEqual({ error: { code: expect.any(String), message: expect.any(String) } });
        }
      }),
      { numRuns: 1500, interruptAfterTimeLimit: 45_000, markInterruptAsFailure: false },
    );
  }, 90_000);
});
