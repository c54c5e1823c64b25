import { credentialsSchema, getLoginThrottle, getSignupThrottle, logIn, readCredentials, signUp } from '../../lib/auth/accounts';
import { authenticate, jwks, signAccessToken } from '../../lib/auth/tokens';
import { clientIp, createRouter, handle, parseJson } from '../../lib/http/router';
import { getDb } from '../../lib/storage/db';

const router = createRouter();

router.post('/signup', async (req, res) => {
  const credentials = parseJson(req, credentialsSchema);
  res.status(201).json(await signUp(await getDb(), await getSignupThrottle(), credentials, clientIp(req)));
});

router.post('/login', async (req, res) => {
  const { email, password } = readCredentials(req.headers.authorization, req.body, Boolean(req.is('application/json')));
  const user = await logIn(await getDb(), await getLoginThrottle(), email, password, clientIp(req));
  res.set('Cache-Control', 'no-store').json(signAccessToken(user));
});

router.post('/validate', (req, res) => {
  res.json(authenticate(req.headers.authorization));
});

router.get('/.well-known/jwks.json', (_req, res) => {
  res.set('Cache-Control', 'public, max-age=300').json(jwks());
});

export const handler = handle(router);
