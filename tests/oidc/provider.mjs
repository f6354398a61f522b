// A real OpenID provider (oidc-provider, pinned in package-lock.json) for tests/oidc_provider.rs.
//
// Usage: node provider.mjs <config.json>. The config (written by the test) names:
//   port      0 for any free port, or the port of a restarted instance
//   cert, key the HTTPS certificate chain and key (PEM files, signed by the test's CA)
//   keys_dir  where signing keys live: `<kid>.json` is loaded, or generated (RS256) and saved
//   kids      the published signing keys, in order; the first one signs id_tokens
//   clients   oidc-provider client metadata
//   accounts  account id -> the claims findAccount returns for it
// When listening it prints one JSON line: {"port": …, "issuer": …}.
//
// Interactions are a minimal JSON API the test drives like a login form:
//   GET  /interaction/:uid          -> {"uid", "prompt"}
//   POST /interaction/:uid/login    form `login=<account id>`
//   POST /interaction/:uid/confirm  grants the requested scopes
// Test-only endpoints (never part of a real provider):
//   POST /test/mint       {"claims", "header"?, "unpublished"?} -> a JWT signed with the
//                         provider's first key (or a key it never publishes)
//   GET  /test/keys       the published keys' kids and public PEMs (SPKI)
//   POST /test/evil-jwks  sets the JWKS served at GET /test/evil-jwks (a `jku` target)
//   GET  /test/hits       how often each /test/evil-jwks and the userinfo endpoint were fetched
//   POST /test/userinfo-delay {"ms"}  answers the userinfo endpoint (/me) that much later

import { readFileSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import https from 'node:https';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';

import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK, exportSPKI, importJWK, SignJWT } from 'jose';

const cfg = JSON.parse(readFileSync(process.argv[2], 'utf8'));

async function signingKey(kid) {
  mkdirSync(cfg.keys_dir, { recursive: true });
  const file = join(cfg.keys_dir, `${kid}.json`);
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  writeFileSync(file, JSON.stringify(jwk));
  return jwk;
}

const keys = [];
for (const kid of cfg.kids) keys.push(await signingKey(kid));
const unpublished = await (async () => {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: `unpublished-${randomUUID()}`, alg: 'RS256' };
})();

const server = https.createServer({
  cert: readFileSync(cfg.cert),
  key: readFileSync(cfg.key),
});
server.listen(cfg.port, '127.0.0.1');
await once(server, 'listening');
const { port } = server.address();
const issuer = `https://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: cfg.clients,
  jwks: { keys },
  cookies: { keys: ['idgate-oidc-test-cookie-key'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  // Scope claims in the id_token of a code flow too (what Google and most providers do).
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(ctx, id) {
    const claims = cfg.accounts[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    IdToken: 600,
    Grant: 600,
    Interaction: 600,
    Session: 600,
  },
});

async function readBody(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

let evilJwks = { keys: [] };
let evilHits = 0;
let userinfoHits = 0;
let userinfoDelay = 0;

provider.use(async (ctx, next) => {
  const path = ctx.path;
  if (path.startsWith('/test/')) {
    ctx.type = 'application/json';
    if (path === '/test/mint' && ctx.method === 'POST') {
      const want = JSON.parse(await readBody(ctx.req));
      const jwk = want.unpublished ? unpublished : keys[0];
      const key = await importJWK(jwk, 'RS256');
      ctx.body = {
        token: await new SignJWT(want.claims)
          .setProtectedHeader({ ...(want.header ?? {}), alg: 'RS256', kid: jwk.kid })
          .sign(key),
      };
    } else if (path === '/test/keys') {
      const out = [];
      for (const k of keys) {
        const pub = await importJWK({ kty: k.kty, n: k.n, e: k.e }, 'RS256');
        out.push({ kid: k.kid, pem: await exportSPKI(pub) });
      }
      ctx.body = out;
    } else if (path === '/test/evil-jwks') {
      if (ctx.method === 'POST') {
        evilJwks = JSON.parse(await readBody(ctx.req));
        ctx.body = {};
      } else {
        evilHits += 1;
        ctx.body = evilJwks;
      }
    } else if (path === '/test/hits') {
      ctx.body = { evil_jwks: evilHits, userinfo: userinfoHits };
    } else if (path === '/test/userinfo-delay' && ctx.method === 'POST') {
      userinfoDelay = JSON.parse(await readBody(ctx.req)).ms;
      ctx.body = {};
    } else {
      ctx.status = 404;
      ctx.body = {};
    }
    return;
  }
  if (path === '/me') {
    userinfoHits += 1;
    if (userinfoDelay > 0) await new Promise((r) => setTimeout(r, userinfoDelay));
    return next();
  }
  const m = path.match(/^\/interaction\/([^/]+)(\/login|\/confirm)?$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'GET' && !m[2]) {
    ctx.body = { uid: details.uid, prompt: details.prompt.name };
    return;
  }
  if (ctx.method !== 'POST') return next();
  let result;
  if (m[2] === '/login') {
    const login = new URLSearchParams(await readBody(ctx.req)).get('login');
    if (!cfg.accounts[login]) {
      ctx.status = 400;
      ctx.body = { error: 'unknown account' };
      return;
    }
    result = { login: { accountId: login } };
  } else {
    const { params, session } = details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    grant.addOIDCScope(params.scope);
    result = { consent: { grantId: await grant.save() } };
  }
  const to = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: false,
  });
  ctx.status = 303;
  ctx.redirect(to);
});

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ port, issuer })}\n`);
