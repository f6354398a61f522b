// idgate's admin port driven by the official Clerk JavaScript SDK (@clerk/backend, pinned in
// package-lock.json). Run by tests/sdk.rs against a real gate:
//   ADMIN_URL   origin of the admin listener (the SDK appends /v1 itself)
//   SECRET_KEY  a key from admin.secret_keys
//   PROXY_URL   origin of the proxy listener
//   SIGN_UP_PATH  the gated sign-up route (JSON body {"email": ...}); default /api/sign-up
// The gate starts with an empty store, `restrictions.allowlist: false` and the blocklist on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClerkClient } from '@clerk/backend';
import { isClerkAPIResponseError } from '@clerk/backend/errors';

function env(name) {
  const v = process.env[name];
  assert.ok(v, `environment variable ${name} is required`);
  return v;
}

const ADMIN_URL = env('ADMIN_URL');
const SECRET_KEY = env('SECRET_KEY');
const PROXY_URL = env('PROXY_URL');
const SIGN_UP_PATH = process.env.SIGN_UP_PATH || '/api/sign-up';

const clerk = createClerkClient({
  secretKey: SECRET_KEY,
  apiUrl: ADMIN_URL,
  telemetry: { disabled: true },
});

/** Awaits `promise`, which must reject with a ClerkAPIResponseError; returns it. */
async function apiError(promise, status, code) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected a ${status} ${code} error, the call succeeded`);
  assert.ok(
    isClerkAPIResponseError(err),
    `expected ClerkAPIResponseError, got ${err && err.constructor && err.constructor.name}: ${err}`,
  );
  assert.equal(err.status, status, `status (errors: ${JSON.stringify(err.errors)})`);
  assert.ok(err.errors.length >= 1, 'errors array is empty');
  assert.equal(err.errors[0].code, code, JSON.stringify(err.errors));
  assert.equal(typeof err.errors[0].message, 'string');
  assert.equal(typeof err.errors[0].longMessage, 'string');
  return err;
}

/** A sign-up through the proxy with a plain fetch. */
async function signUp(email) {
  const res = await fetch(PROXY_URL + SIGN_UP_PATH, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email, password: 'hunter2' }),
  });
  const text = await res.text();
  return { status: res.status, text, json: () => JSON.parse(text) };
}

function assertForwarded(r, email) {
  assert.equal(r.status, 200, `sign-up of ${email} should reach the upstream: ${r.text}`);
  assert.match(r.text, /^upstream saw POST /, r.text);
}

function assertDenied(r, email, reason) {
  assert.equal(r.status, 403, `sign-up of ${email} should be denied: ${r.text}`);
  const e = r.json().errors[0];
  assert.equal(e.code, 'not_allowed_access');
  assert.equal(e.meta.identifiers.length, 1, JSON.stringify(e.meta));
  assert.equal(e.meta.identifiers[0].toLowerCase(), email.toLowerCase());
  if (reason) assert.equal(e.meta.reason, reason);
}

test('allowlist: create, list {data,totalCount}, delete', async () => {
  const a = await clerk.allowlistIdentifiers.createAllowlistIdentifier({
    identifier: 'Alice@Example.COM',
    notify: false,
  });
  assert.match(a.id, /^alid_[0-9A-Za-z]{27}$/);
  assert.equal(a.identifier, 'alice@example.com', 'stored normalised (lower case)');
  assert.equal(a.identifierType, 'email_address');
  assert.ok(Number.isInteger(a.createdAt) && a.createdAt > 1e12, `ms timestamp: ${a.createdAt}`);
  assert.ok(Number.isInteger(a.updatedAt) && a.updatedAt >= a.createdAt);

  const d = await clerk.allowlistIdentifiers.createAllowlistIdentifier({
    identifier: '*@partner.io',
    notify: false,
  });
  assert.equal(d.identifierType, 'email_address');
  const p = await clerk.allowlistIdentifiers.createAllowlistIdentifier({
    identifier: '+12025550123',
    notify: false,
  });
  assert.equal(p.identifierType, 'phone_number');
  const w = await clerk.allowlistIdentifiers.createAllowlistIdentifier({
    identifier: '0x52908400098527886E0F7030069857D2E4169EE7',
    notify: false,
  });
  assert.equal(w.identifierType, 'web3_wallet');

  const list = await clerk.allowlistIdentifiers.getAllowlistIdentifierList();
  assert.ok(Array.isArray(list.data), `expected {data,totalCount}, got ${JSON.stringify(list)}`);
  assert.equal(list.totalCount, 4);
  assert.deepEqual(
    list.data.map((x) => x.id).sort(),
    [a.id, d.id, p.id, w.id].sort(),
  );
  assert.equal(list.data[0].id, w.id, 'newest first');

  const page = await clerk.allowlistIdentifiers.getAllowlistIdentifierList({ limit: 2, offset: 1 });
  assert.equal(page.data.length, 2);
  assert.equal(page.totalCount, 4, 'totalCount ignores limit/offset');

  const del = await clerk.allowlistIdentifiers.deleteAllowlistIdentifier(a.id);
  assert.equal(del.object, 'allowlist_identifier');
  assert.equal(del.id, a.id);
  assert.equal(del.deleted, true);

  const after = await clerk.allowlistIdentifiers.getAllowlistIdentifierList();
  assert.equal(after.totalCount, 3);
  assert.ok(!after.data.some((x) => x.id === a.id), 'deleted entry still listed');
  for (const x of [d, p, w]) await clerk.allowlistIdentifiers.deleteAllowlistIdentifier(x.id);
  assert.equal((await clerk.allowlistIdentifiers.getAllowlistIdentifierList()).totalCount, 0);
});

test('blocklist: create, list {data,totalCount}, delete', async () => {
  const b = await clerk.blocklistIdentifiers.createBlocklistIdentifier({ identifier: 'Eve@Example.com' });
  assert.match(b.id, /^blid_[0-9A-Za-z]{27}$/);
  assert.equal(b.identifier, 'eve@example.com');
  assert.equal(b.identifierType, 'email_address');
  assert.ok(Number.isInteger(b.createdAt) && b.createdAt > 1e12);
  const dom = await clerk.blocklistIdentifiers.createBlocklistIdentifier({ identifier: '*@spam.test' });

  const list = await clerk.blocklistIdentifiers.getBlocklistIdentifierList();
  assert.ok(Array.isArray(list.data), `expected {data,totalCount}, got ${JSON.stringify(list)}`);
  assert.equal(list.totalCount, 2);
  assert.deepEqual(list.data.map((x) => x.id).sort(), [b.id, dom.id].sort());

  const del = await clerk.blocklistIdentifiers.deleteBlocklistIdentifier(b.id);
  assert.equal(del.object, 'blocklist_identifier');
  assert.equal(del.id, b.id);
  assert.equal(del.deleted, true);
  await clerk.blocklistIdentifiers.deleteBlocklistIdentifier(dom.id);
  const after = await clerk.blocklistIdentifiers.getBlocklistIdentifierList();
  assert.equal(after.totalCount, 0);
  assert.deepEqual(after.data, []);
});

test('errors: duplicate, malformed, unknown id, wrong key', async () => {
  const a = await clerk.allowlistIdentifiers.createAllowlistIdentifier({
    identifier: 'dup@example.com',
    notify: false,
  });
  // Duplicate after normalisation.
  await apiError(
    clerk.allowlistIdentifiers.createAllowlistIdentifier({ identifier: 'DUP@example.com', notify: false }),
    400,
    'duplicate_record',
  );
  const b = await clerk.blocklistIdentifiers.createBlocklistIdentifier({ identifier: 'dup@example.com' });
  await apiError(
    clerk.blocklistIdentifiers.createBlocklistIdentifier({ identifier: 'Dup@Example.com' }),
    400,
    'duplicate_record',
  );

  // Malformed identifiers.
  for (const identifier of ['not an identifier', 'example.com', '12345']) {
    const e = await apiError(
      clerk.allowlistIdentifiers.createAllowlistIdentifier({ identifier, notify: false }),
      422,
      'form_param_format_invalid',
    );
    assert.equal(e.errors[0].meta.paramName, 'identifier', identifier);
  }
  await apiError(
    clerk.blocklistIdentifiers.createBlocklistIdentifier({ identifier: 'bad@@x' }),
    422,
    'form_param_format_invalid',
  );

  // notify: SMS delivery is not configured (only email is), and a domain cannot be notified.
  const n = await apiError(
    clerk.allowlistIdentifiers.createAllowlistIdentifier({ identifier: '+12025550199', notify: true }),
    422,
    'form_param_value_invalid',
  );
  assert.match(n.errors[0].longMessage, /invitations\.sms/);
  await apiError(
    clerk.allowlistIdentifiers.createAllowlistIdentifier({ identifier: '*@example.org', notify: true }),
    422,
    'form_conditional_param_disallowed',
  );
  const listed = await clerk.allowlistIdentifiers.getAllowlistIdentifierList();
  assert.deepEqual(listed.data.map((x) => x.id), [a.id], 'a refused create wrote an entry');

  // Unknown ids.
  await apiError(
    clerk.allowlistIdentifiers.deleteAllowlistIdentifier('alid_2xhFjEI5X2qWRvtV13BzSj8H6Dk'),
    404,
    'resource_not_found',
  );
  await apiError(
    clerk.blocklistIdentifiers.deleteBlocklistIdentifier('blid_2xhFjEI5X2qWRvtV13BzSj8H6Dk'),
    404,
    'resource_not_found',
  );
  // An allowlist id on the blocklist endpoint is unknown there.
  await apiError(clerk.blocklistIdentifiers.deleteBlocklistIdentifier(a.id), 404, 'resource_not_found');

  // Wrong key: every endpoint answers 401 clerk_key_invalid and changes nothing.
  const ids = async () => (await clerk.allowlistIdentifiers.getAllowlistIdentifierList()).data.map((x) => x.id);
  const before = await ids();
  assert.ok(before.includes(a.id));
  const wrong = createClerkClient({
    secretKey: SECRET_KEY + 'x',
    apiUrl: ADMIN_URL,
    telemetry: { disabled: true },
  });
  await apiError(wrong.allowlistIdentifiers.getAllowlistIdentifierList(), 401, 'clerk_key_invalid');
  await apiError(wrong.blocklistIdentifiers.getBlocklistIdentifierList(), 401, 'clerk_key_invalid');
  await apiError(
    wrong.blocklistIdentifiers.createBlocklistIdentifier({ identifier: 'x@example.com' }),
    401,
    'clerk_key_invalid',
  );
  await apiError(wrong.allowlistIdentifiers.deleteAllowlistIdentifier(a.id), 401, 'clerk_key_invalid');
  await apiError(wrong.instance.updateRestrictions({ allowlist: true }), 401, 'clerk_key_invalid');
  assert.deepEqual(await ids(), before, 'a rejected call changed the list');

  await clerk.allowlistIdentifiers.deleteAllowlistIdentifier(a.id);
  await clerk.blocklistIdentifiers.deleteBlocklistIdentifier(b.id);
});

test('blocklist through the SDK gates sign-ups through the proxy (read-your-writes)', async () => {
  const email = 'mallory@evil.test';
  assertForwarded(await signUp(email), email);

  const b = await clerk.blocklistIdentifiers.createBlocklistIdentifier({ identifier: email });
  // No wait: the entry is enforced before the API answered.
  assertDenied(await signUp(email), email, 'blocklist');
  assertDenied(await signUp('Mallory@Evil.test'), 'Mallory@Evil.test', 'blocklist');
  assertForwarded(await signUp('someone@evil.test'), 'someone@evil.test');

  await clerk.blocklistIdentifiers.deleteBlocklistIdentifier(b.id);
  assertForwarded(await signUp(email), email);

  // A domain entry blocks every address at that domain.
  const dom = await clerk.blocklistIdentifiers.createBlocklistIdentifier({ identifier: '*@evil.test' });
  assertDenied(await signUp('anyone@evil.test'), 'anyone@evil.test', 'blocklist');
  await clerk.blocklistIdentifiers.deleteBlocklistIdentifier(dom.id);
  assertForwarded(await signUp('anyone@evil.test'), 'anyone@evil.test');
});

test('instance.updateRestrictions switches the allowlist on and off', async () => {
  const on = await clerk.instance.updateRestrictions({ allowlist: true });
  assert.equal(on.allowlist, true);
  assert.equal(on.blocklist, true);
  assert.equal(on.blockEmailSubaddresses, false);
  assert.equal(on.blockDisposableEmailDomains, false);
  // Enforced even while the allowlist is empty.
  assertDenied(await signUp('carol@elsewhere.test'), 'carol@elsewhere.test', 'allowlist');

  const a = await clerk.allowlistIdentifiers.createAllowlistIdentifier({
    identifier: 'carol@elsewhere.test',
    notify: false,
  });
  assertForwarded(await signUp('carol@elsewhere.test'), 'carol@elsewhere.test');
  assertDenied(await signUp('dave@elsewhere.test'), 'dave@elsewhere.test', 'allowlist');

  const sub = await clerk.instance.updateRestrictions({ blockEmailSubaddresses: true });
  assert.equal(sub.allowlist, true, 'an absent field is left unchanged');
  assert.equal(sub.blockEmailSubaddresses, true);

  const off = await clerk.instance.updateRestrictions({ allowlist: false, blockEmailSubaddresses: false });
  assert.equal(off.allowlist, false);
  assert.equal(off.blockEmailSubaddresses, false);
  assertForwarded(await signUp('dave@elsewhere.test'), 'dave@elsewhere.test');
  await clerk.allowlistIdentifiers.deleteAllowlistIdentifier(a.id);
});

test('instance.update (PATCH /v1/instance) answers 204', async () => {
  const r = await clerk.instance.update({
    allowedOrigins: ['http://localhost:3000'],
    enhancedEmailDeliverability: false,
    testMode: true,
  });
  assert.equal(r, undefined);
});

// Invitations (issue #9). The gate's `invitations:` points at an SMTP relay on a closed loopback
// port, so deliveries wait in the outbox; tests/sdk.rs checks the delivery rows afterwards.
test('invitations: create, bulk, list, revoke, delete, duplicate', async () => {
  const inv = await clerk.invitations.createInvitation({
    emailAddress: 'Invitee-JS@Example.com',
    publicMetadata: { plan: 'pro' },
    expiresInDays: 7,
  });
  assert.match(inv.id, /^inv_[0-9A-Za-z]{27}$/);
  assert.equal(inv.emailAddress, 'invitee-js@example.com');
  assert.equal(inv.status, 'pending');
  assert.deepEqual(inv.publicMetadata, { plan: 'pro' });
  assert.match(inv.url, /^https:\/\/app\.test\/accept\?token=[0-9A-Za-z]{32}$/);

  const err = await apiError(
    clerk.invitations.createInvitation({ emailAddress: 'invitee-js@example.com' }),
    400,
    'duplicate_record',
  );
  assert.deepEqual(err.errors[0].meta.emailAddresses, ['invitee-js@example.com']);

  const bulk = await clerk.invitations.createInvitationBulk([
    { emailAddress: 'bulk1-js@example.com', notify: false },
    { emailAddress: 'bulk2-js@example.com', notify: false },
  ]);
  assert.equal(bulk.length, 2);
  assert.deepEqual(bulk.map((i) => i.emailAddress), ['bulk1-js@example.com', 'bulk2-js@example.com']);

  const list = await clerk.invitations.getInvitationList();
  assert.equal(list.totalCount, 3);
  assert.equal(list.data[0].emailAddress, 'bulk2-js@example.com', 'newest first');
  const page = await clerk.invitations.getInvitationList({ limit: 1, offset: 1, orderBy: '+email_address' });
  assert.equal(page.totalCount, 3);
  assert.deepEqual(page.data.map((i) => i.emailAddress), ['bulk2-js@example.com']);
  const found = await clerk.invitations.getInvitationList({ query: 'invitee-js' });
  assert.deepEqual(found.data.map((i) => i.id), [inv.id]);

  const revoked = await clerk.invitations.revokeInvitation(bulk[0].id);
  assert.equal(revoked.status, 'revoked');
  assert.equal(revoked.revoked, true);
  await apiError(clerk.invitations.revokeInvitation(bulk[0].id), 400, 'invitation_already_revoked');
  await apiError(clerk.invitations.revokeInvitation('inv_doesnotexist'), 404, 'resource_not_found');
  const pending = await clerk.invitations.getInvitationList({ status: 'pending' });
  assert.deepEqual(pending.data.map((i) => i.emailAddress).sort(), ['bulk2-js@example.com', 'invitee-js@example.com']);
  const rev = await clerk.invitations.getInvitationList({ status: 'revoked' });
  assert.deepEqual(rev.data.map((i) => i.id), [bulk[0].id]);

  const del = await clerk.invitations.deleteInvitation(bulk[1].id);
  assert.equal(del.id, bulk[1].id);
  assert.equal(del.deleted, true);
  assert.equal((await clerk.invitations.getInvitationList()).totalCount, 1);
});

test('allowlist notify: true adds the entry with an invitation', async () => {
  const a = await clerk.allowlistIdentifiers.createAllowlistIdentifier({
    identifier: 'Friend-JS@Example.com',
    notify: true,
  });
  assert.equal(a.identifier, 'friend-js@example.com');
  assert.match(a.invitationId, /^inv_[0-9A-Za-z]{27}$/);
  const list = await clerk.invitations.getInvitationList({ query: 'friend-js@example.com' });
  assert.deepEqual(list.data.map((i) => [i.id, i.status]), [[a.invitationId, 'pending']]);
  // A domain cannot be notified.
  await apiError(
    clerk.allowlistIdentifiers.createAllowlistIdentifier({ identifier: '*@friends.io', notify: true }),
    422,
    'form_conditional_param_disallowed',
  );
});
