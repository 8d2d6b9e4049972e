// A local "Google" for the tests: npm `oidc-provider` (a certified OpenID Provider nobody here
// wrote), on loopback, so the tenant Worker's Google sign-in meets a real peer for discovery,
// JWKS, the ID token, nonce and PKCE.
//
//   node tests/oidc_google.mjs <port>      (started by tests/oidc_support.py; prints "ready <url>")
//
// What is Google-specific is mapped here, never in product code:
//   - the issuer is "https://accounts.google.com" (the iss our Worker accepts); the endpoints,
//     as discovery lists them, are on http://127.0.0.1:<port> (the request's own origin);
//   - `prompt=select_account` is a prompt Google knows: registered here as a requestable prompt;
//   - the ID token carries the scope's claims (email, email_verified, name), as Google's does
//     (conformIdTokenClaims: false), and the client authenticates with client_secret_post.
// Test-only parts: one fixed account (OIDC_TEST_EMAIL), interactions that consent at once (no
// forms), clients registered at run time through POST /__test__/clients (the tenants' hosts are
// made per test), state in memory.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import http from 'node:http';

import Provider, { interactionPolicy } from 'oidc-provider';

const port = Number(process.argv[2] || 0);
const account = {
  sub: process.env.OIDC_TEST_SUB || '104857600012345678901',
  email: process.env.OIDC_TEST_EMAIL || 'ada@oidc-test.example',
  name: process.env.OIDC_TEST_NAME || 'Ada Lovelace',
};

const store = new Map();
class MemoryStore { // oidc-provider's adapter interface, one Map for every model
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload) {
    store.set(this.key(id), payload);
    if (this.model === 'Session' && payload.uid) store.set(`uid:${payload.uid}`, id);
  }
  async find(id) { return store.get(this.key(id)); }
  async findByUid(uid) { const id = store.get(`uid:${uid}`); return id ? this.find(id) : undefined; }
  async findByUserCode() { return undefined; }
  async consume(id) { const p = store.get(this.key(id)); if (p) p.consumed = Math.floor(Date.now() / 1000); }
  async destroy(id) { store.delete(this.key(id)); }
  async revokeByGrantId(grantId) {
    for (const [key, value] of store) if (value && value.grantId === grantId) store.delete(key);
  }
}

const policy = interactionPolicy.base();
policy.add(new interactionPolicy.Prompt({ name: 'select_account', requestable: true }));
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: `local-google-${randomBytes(4).toString('hex')}`,
  alg: 'RS256', use: 'sig' };

const provider = new Provider('https://accounts.google.com', {
  adapter: MemoryStore,
  jwks: { keys: [signing] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
  conformIdTokenClaims: false,
  clientDefaults: { token_endpoint_auth_method: 'client_secret_post', grant_types: ['authorization_code'],
    response_types: ['code'], id_token_signed_response_alg: 'RS256' },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { policy, url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: async (ctx, sub) => (sub === account.sub ? {
    accountId: sub,
    claims: async () => ({ sub, email: account.email, email_verified: true, name: account.name }),
  } : undefined),
  ttl: { AuthorizationCode: 60, IdToken: 3600, AccessToken: 3600, Interaction: 600, Session: 600, Grant: 600 },
});
provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error', err));

async function consentAtOnce(req, res) {
  // The fixed account signs in, consents to what was asked and "selects" itself: one round.
  const { prompt, params, session, grantId } = await provider.interactionDetails(req, res);
  const accountId = session?.accountId || account.sub;
  const grant = grantId ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  grant.addOIDCScope(String(params.scope || 'openid'));
  if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
  const result = { login: { accountId }, consent: { grantId: await grant.save() }, select_account: {} };
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: true });
}

async function registerClient(req, res) {
  let body = '';
  for await (const chunk of req) body += chunk;
  const { client_id: clientId, client_secret: clientSecret, redirect_uris: redirectUris } = JSON.parse(body);
  await new MemoryStore('Client').upsert(clientId, {
    client_id: clientId, client_secret: clientSecret, redirect_uris: redirectUris,
    token_endpoint_auth_method: 'client_secret_post', grant_types: ['authorization_code'], response_types: ['code'],
  });
  res.writeHead(201, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ client_id: clientId }));
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  const path = (req.url || '').split('?')[0];
  const handler = req.method === 'POST' && path === '/__test__/clients' ? registerClient
    : req.method === 'GET' && /^\/interaction\/[^/]+$/.test(path) ? consentAtOnce : null;
  if (!handler) return callback(req, res);
  handler(req, res).catch((err) => {
    console.error('oidc test route failed', err);
    if (!res.headersSent) res.writeHead(500);
    res.end(String(err && err.message));
  });
  return undefined;
});
server.listen(port, '127.0.0.1', () => {
  console.log(`ready http://127.0.0.1:${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
