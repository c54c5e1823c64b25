import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import jwt from 'jsonwebtoken';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backends, startStack, type Stack } from './support/stack';

const json = (body: unknown) => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
const basic = (email: string, password: string) => `Basic ${Buffer.from(`${email}:${password}`).toString('base64')}`;
const newEmail = () => `user-${randomBytes(5).toString('hex')}@example.com`;

describe.each(backends())('auth on $name backends', ({ env }) => {
  let stack: Stack;
  let call: (p: string, init?: RequestInit) => Promise<Response>;

  beforeAll(async () => {
    // The test client stands in for the ingress: one trusted hop, so X-Forwarded-For names the client.
    stack = await startStack({ ...env, LOGIN_MAX_FAILURES: '3', LOGIN_WINDOW_SECONDS: '60', TRUST_PROXY: '1' });
    call = (p, init) => fetch(`${stack.url}/auth${p}`, init);
  });
  afterAll(() => stack.close());

  async function signUpAndLogIn() {
    const email = newEmail();
    const password = 'correct horse battery';
    expect((await call('/signup', json({ email, password }))).status).toBe(201);
    const res = await call('/login', { method: 'POST', headers: { authorization: basic(email, password) } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { token: string };
    return { email, password, token: body.token };
  }

  it('when a user signs up, then 201 returns the id and lower-cased email, and the password is stored hashed', async () => {
    const email = newEmail().toUpperCase();
    const res = await call('/signup', json({ email, password: 'password-123' }));
    expect(res.status).toBe(201);
    const body = (await res.json()) as { id: string; email: string };
    expect(body).toEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), email: email.toLowerCase() });
    const { getDb } = await import('../lib/storage/db');
    const row = await (await getDb())('users').where({ id: body.id }).first();
    expect(row.password_hash).toMatch(/^scrypt\$\d+\$8\$1\$/);
    expect(row.password_hash).not.toContain('password-123');
  });

  it('when the email exists in another case, then signup answers 409', async () => {
    const email = newEmail();
    expect((await call('/signup', json({ email, password: 'password-123' }))).status).toBe(201);
    const res = await call('/signup', json({ email: email.toUpperCase(), password: 'password-456' }));
    expect(res.status).toBe(409);
    expect(await res.json()).toEqual({ error: { code: 'conflict', message: expect.any(String) } });
  });

  it.each([
    ['an invalid email', { email: 'not-an-email', password: 'password-123' }],
    ['a short password', { email: 'a@example.com', password: 'short' }],
    ['an SQL-looking email', { email: "' OR 1=1; DROP TABLE users; --", password: 'password-123' }],
    ['a missing password', { email: 'a@example.com' }],
    ['a non-string email', { email: { $gt: '' }, password: 'password-123' }],
  ])('when signup gets %s, then 400 with a JSON error', async (_label, body) => {
    const res = await call('/signup', json(body));
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: { code: 'bad_request', message: expect.any(String) } });
  });

  it('when signup gets a body that is not JSON, then 415 or 400, never 500', async () => {
    const text = await call('/signup', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'email=a&password=b' });
    expect(text.status).toBe(415);
    const broken = await call('/signup', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"email":' });
    expect(broken.status).toBe(400);
    expect(((await broken.json()) as { error: { code: string } }).error.code).toBe('bad_request');
  });

  it('when a body is compressed or sent without a length, then 415 or 411 before it is inflated or read', async () => {
    const { gzipSync } = await import('node:zlib');
    const bomb = gzipSync(Buffer.from(JSON.stringify({ email: 'a@example.com', password: 'x'.repeat(5_000_000) })));
    const gz = await call('/signup', { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: bomb });
    expect(gz.status).toBe(415);
    expect(((await gz.json()) as { error: { code: string } }).error.code).toBe('unsupported_media_type');
    const stream = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('{}')); c.close(); } });
    const chunked = await call('/signup', { method: 'POST', headers: { 'content-type': 'application/json' }, body: stream, duplex: 'half' } as RequestInit);
    expect(chunked.status).toBe(411);
  });

  it('when a body is larger than the limit, then 413 before it is read', async () => {
    const res = await call('/signup', json({ email: 'a@example.com', password: 'x'.repeat(100_000) }));
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('too_large');
  });

  it('when logging in with Basic or JSON credentials, then a short-lived ES256 token with the documented claims', async () => {
    const { email, password, token } = await signUpAndLogIn();
    const viaJson = await call('/login', json({ email: email.toUpperCase(), password }));
    expect(viaJson.status).toBe(200);
    const body = (await viaJson.json()) as { token: string; tokenType: string; expiresIn: number };
    expect(body).toMatchObject({ tokenType: 'Bearer', expiresIn: 3600 });
    for (const t of [token, body.token]) {
      const decoded = jwt.decode(t, { complete: true })!;
      expect(decoded.header).toMatchObject({ alg: 'ES256', kid: expect.any(String) });
      const claims = decoded.payload as jwt.JwtPayload;
      expect(claims).toMatchObject({ email, iss: 'video2mp3', aud: 'video2mp3', sub: expect.any(String) });
      expect(claims.exp! - claims.iat!).toBe(3600);
    }
  });

  it('when the JWKS is fetched, then its key verifies a token and carries the token kid', async () => {
    const { token } = await signUpAndLogIn();
    const res = await call('/.well-known/jwks.json');
    expect(res.status).toBe(200);
    const { keys } = (await res.json()) as { keys: (Record<string, string> & { kid: string })[] };
    const kid = jwt.decode(token, { complete: true })!.header.kid;
    const jwk = keys.find((k) => k.kid === kid)!;
    expect(jwk).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
    expect(jwk).not.toHaveProperty('d');
    const key = createPublicKey({ key: jwk, format: 'jwk' });
    expect(jwt.verify(token, key, { algorithms: ['ES256'] })).toMatchObject({ iss: 'video2mp3' });
  });

  it('when a token is validated, then 200 with its claims', async () => {
    const { email, token } = await signUpAndLogIn();
    const res = await call('/validate', { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ email, iss: 'video2mp3', aud: 'video2mp3' });
  });

  it('when the password is wrong or the email unknown, then the same 401 after similar work', async () => {
    const { email } = await signUpAndLogIn();
    const timed = async (e: string) => {
      const started = performance.now();
      const res = await call('/login', { method: 'POST', headers: { authorization: basic(e, 'wrong-password') } });
      return { status: res.status, body: await res.json(), ms: performance.now() - started };
    };
    const wrong = await timed(email);
    const unknown = await timed(newEmail());
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect(unknown.body).toEqual(wrong.body);
    // Both paths run scrypt: neither answers in a fraction of the other's time.
    expect(unknown.ms).toBeGreaterThan(wrong.ms / 3);
    expect(wrong.ms).toBeGreaterThan(unknown.ms / 3);
  });

  it('when an email keeps failing, then 429 with Retry-After, even for the right password', async () => {
    const { email, password } = await signUpAndLogIn();
    for (let i = 0; i < 3; i++) {
      expect((await call('/login', json({ email, password: 'wrong-password' }))).status).toBe(401);
    }
    const locked = await call('/login', json({ email, password }));
    expect(locked.status).toBe(429);
    expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(((await locked.json()) as { error: { code: string } }).error.code).toBe('too_many_requests');
  });

  it('when one address fails for many emails, then it is throttled too', async () => {
    const headers = { 'content-type': 'application/json', 'x-forwarded-for': `203.0.113.${Math.floor(Math.random() * 250)}` };
    const statuses = [];
    for (let i = 0; i < 13; i++) {
      const res = await call('/login', { method: 'POST', headers, body: JSON.stringify({ email: newEmail(), password: 'wrong-password' }) });
      statuses.push(res.status);
    }
    expect(statuses.slice(0, 12).every((s) => s === 401)).toBe(true);
    expect(statuses[12]).toBe(429);
  });

  it('when the email is the longest valid one, then a wrong password is 401 (not 500) and the lockout still works', async () => {
    // 254 characters: the longest address signup accepts; the throttle key must not overflow its column.
    const local = `u${randomBytes(8).toString('hex')}`.padEnd(64, 'x');
    const domain = `${'d'.repeat(63)}.${'e'.repeat(63)}.${'f'.repeat(254 - 64 - 1 - 128 - 4)}.com`;
    const email = `${local}@${domain}`;
    expect(email).toHaveLength(254);
    const password = 'correct horse battery';
    expect((await call('/signup', json({ email, password }))).status).toBe(201);
    for (let i = 0; i < 3; i++) {
      const res = await call('/login', json({ email, password: 'wrong-password' }));
      expect(res.status).toBe(401);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe('invalid_credentials');
    }
    const locked = await call('/login', json({ email, password }));
    expect(locked.status).toBe(429);
    expect(Number(locked.headers.get('retry-after'))).toBeGreaterThan(0);
  });

  it('when the client sits behind the trusted proxy, then an address prepended to X-Forwarded-For does not unlock a locked one', async () => {
    const locked = `198.51.100.${Math.floor(Math.random() * 250)}`;
    const attempt = (xff: string) => call('/login', { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': xff }, body: JSON.stringify({ email: newEmail(), password: 'wrong-password' }) });
    for (let i = 0; i < 12; i++) expect((await attempt(locked)).status).toBe(401);
    expect((await attempt(locked)).status).toBe(429);
    // The proxy appends the real peer last; whatever the client wrote before it is not believed.
    expect((await attempt(`192.0.2.1, ${locked}`)).status).toBe(429);
    expect((await attempt(`192.0.2.2, 192.0.2.3, ${locked}`)).status).toBe(429);
  });

  it('when login gets an SQL-looking email or no credentials, then 401 or 400, never 500', async () => {
    expect((await call('/login', json({ email: "' OR '1'='1", password: "' OR '1'='1" }))).status).toBe(401);
    expect((await call('/login', { method: 'POST' })).status).toBe(400);
    expect((await call('/login', { method: 'POST', headers: { authorization: 'Basic !!!' } })).status).toBe(400);
  });

  describe('hostile tokens', () => {
    let good: string;
    let claims: jwt.JwtPayload;
    let kid: string;
    let signingKey: ReturnType<typeof createPrivateKey>;

    beforeAll(async () => {
      good = (await signUpAndLogIn()).token;
      const decoded = jwt.decode(good, { complete: true })!;
      claims = decoded.payload as jwt.JwtPayload;
      kid = decoded.header.kid!;
      signingKey = createPrivateKey(fs.readFileSync(path.join(stack.config.dataDir, 'jwt-private.pem')));
    });

    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const now = () => Math.floor(Date.now() / 1000);
    const cases: [string, () => string | undefined][] = [
      ['no header', () => undefined],
      ['a malformed header', () => 'Bearer not-a-token'],
      ['a Basic header', () => 'Basic dXNlcjpwYXNz'],
      ['a payload that is not JSON', () => 'Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.AAAA.AAAA'],
      ['a tampered signature', () => `Bearer ${good.slice(0, -4)}${good.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`],
      ['a tampered payload', () => {
        const [h, , s] = good.split('.');
        return `Bearer ${h}.${b64({ ...claims, sub: 'someone-else' })}.${s}`;
      }],
      ['alg none', () => `Bearer ${b64({ alg: 'none', typ: 'JWT', kid })}.${b64(claims)}.`],
      ['HS256 signed with the public key', () => {
        const publicPem = createPublicKey(signingKey).export({ format: 'pem', type: 'spki' }).toString();
        const header = b64({ alg: 'HS256', typ: 'JWT', kid });
        const payload = b64({ ...claims });
        const sig = createHmac('sha256', publicPem).update(`${header}.${payload}`).digest('base64url');
        return `Bearer ${header}.${payload}.${sig}`;
      }],
      ['an expired token', () => `Bearer ${jwt.sign({ email: claims.email, sub: claims.sub, iss: 'video2mp3', aud: 'video2mp3', iat: now() - 7200, exp: now() - 3600 }, signingKey, { algorithm: 'ES256', keyid: kid })}`],
      ['a wrong audience', () => `Bearer ${jwt.sign({ email: claims.email }, signingKey, { algorithm: 'ES256', keyid: kid, subject: claims.sub, issuer: 'video2mp3', audience: 'other', expiresIn: 60 })}`],
      ['a wrong issuer', () => `Bearer ${jwt.sign({ email: claims.email }, signingKey, { algorithm: 'ES256', keyid: kid, subject: claims.sub, issuer: 'evil', audience: 'video2mp3', expiresIn: 60 })}`],
      ['an unknown kid', () => `Bearer ${jwt.sign({ email: claims.email }, signingKey, { algorithm: 'ES256', keyid: 'unknown', subject: claims.sub, issuer: 'video2mp3', audience: 'video2mp3', expiresIn: 60 })}`],
      ['a token from another key', () => {
        const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
        return `Bearer ${jwt.sign({ email: claims.email }, other, { algorithm: 'ES256', keyid: kid, subject: claims.sub, issuer: 'video2mp3', audience: 'video2mp3', expiresIn: 60 })}`;
      }],
    ];

    it.each(cases)('when validate gets %s, then 401 with a JSON error', async (_label, header) => {
      const h = header();
      const res = await call('/validate', { method: 'POST', headers: h ? { authorization: h } : {} });
      expect(res.status).toBe(401);
      expect(await res.json()).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
    });

    it('when the well-formed token is validated, then the table above is not failing for a trivial reason', async () => {
      const res = await call('/validate', { method: 'POST', headers: { authorization: `Bearer ${good}` } });
      expect(res.status).toBe(200);
    });
  });

  it('when a path is unknown, then 404 with a JSON error', async () => {
    const res = await call('/nope');
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { code: 'not_found', message: expect.any(String) } });
  });
});

describe.each(backends())('the signup limit on $name backends', ({ env }) => {
  it('when one address signs up many times, then 429 with Retry-After once it used its hourly signups', async () => {
    const local = await startStack({ ...env, SIGNUP_MAX_PER_HOUR: '3', TRUST_PROXY: 'loopback' });
    try {
      const from = `198.51.100.${Math.floor(Math.random() * 250)}`;
      const signup = (ip: string) => fetch(`${local.url}/auth/signup`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': ip }, body: JSON.stringify({ email: newEmail(), password: 'password-123' }) });
      const statuses = [];
      for (let i = 0; i < 5; i++) statuses.push((await signup(from)).status);
      expect(statuses).toEqual([201, 201, 201, 429, 429]);
      const refused = await signup(from);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(await refused.json()).toEqual({ error: { code: 'too_many_requests', message: expect.stringContaining('signups') } });
      expect((await signup(`203.0.113.${Math.floor(Math.random() * 250)}`)).status).toBe(201); // another address has its own budget
    } finally {
      await local.close();
    }
  });

  it('when a client rotates X-Forwarded-For, then it is ignored: the connection\'s address is counted', async () => {
    const stack = await startStack({ ...env, SIGNUP_MAX_PER_HOUR: '2' });
    try {
      const statuses = [];
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${stack.url}/auth/signup`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-forwarded-for': `203.0.113.${i + 1}` },
          body: JSON.stringify({ email: newEmail(), password: 'password-123' }),
        });
        statuses.push(res.status);
      }
      // All five come from 127.0.0.1: at most two get through (fewer if this run already used some).
      expect(statuses.filter((s) => s === 201).length).toBeLessThanOrEqual(2);
      expect(statuses.slice(2)).toEqual([429, 429, 429]);
    } finally {
      await stack.close();
    }
  });
});
