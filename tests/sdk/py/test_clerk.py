"""idgate's admin port driven by the official Clerk Python SDK (clerk-backend-api, pinned in
requirements.txt). Run by tests/sdk.rs against a real gate:

    ADMIN_URL     origin of the admin listener (``/v1`` is appended here, as the SDK expects)
    SECRET_KEY    a key from admin.secret_keys
    PROXY_URL     origin of the proxy listener
    SIGN_UP_PATH  the gated sign-up route (JSON body {"email": ...}); default /api/sign-up

The gate starts with an empty store, ``restrictions.allowlist: false`` and the blocklist on.
Tests run in name order (unittest's default) and each leaves the store empty again.
"""

import json
import os
import re
import unittest
import urllib.error
import urllib.request

from clerk_backend_api import Clerk, models
from clerk_backend_api.utils import BackoffStrategy, RetryConfig

ADMIN_URL = os.environ["ADMIN_URL"]
SECRET_KEY = os.environ["SECRET_KEY"]
PROXY_URL = os.environ["PROXY_URL"]
SIGN_UP_PATH = os.environ.get("SIGN_UP_PATH", "/api/sign-up")

# The SDK retries 5XX and connection errors for up to an hour by default: turn that off so a
# server error fails the test at once.
NO_RETRIES = RetryConfig("none", BackoffStrategy(1, 1, 1.0, 1), False)


def client(key=SECRET_KEY):
    return Clerk(
        bearer_auth=key,
        server_url=ADMIN_URL + "/v1",
        retry_config=NO_RETRIES,
        timeout_ms=10_000,
    )


def sign_up(email):
    """A sign-up POST through the proxy; returns (status, body text)."""
    req = urllib.request.Request(
        PROXY_URL + SIGN_UP_PATH,
        data=json.dumps({"email": email, "password": "hunter2"}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class ClerkPythonSdk(unittest.TestCase):
    def setUp(self):
        self.clerk = client()

    def tearDown(self):
        self.clerk.__exit__(None, None, None)

    # -- helpers -----------------------------------------------------------------------------

    def assert_clerk_error(self, ctx, status, code):
        """ctx is an assertRaises context for models.ClerkErrors."""
        err = ctx.exception
        self.assertEqual(err.status_code, status, err.body)
        self.assertGreaterEqual(len(err.data.errors), 1)
        first = err.data.errors[0]
        self.assertEqual(first.code, code, err.body)
        self.assertIsInstance(first.message, str)
        self.assertIsInstance(first.long_message, str)
        return first

    def assert_forwarded(self, email):
        status, body = sign_up(email)
        self.assertEqual(status, 200, f"sign-up of {email} should be forwarded: {body}")
        self.assertTrue(body.startswith("upstream saw POST "), body)

    def assert_denied(self, email, reason):
        status, body = sign_up(email)
        self.assertEqual(status, 403, f"sign-up of {email} should be denied: {body}")
        err = json.loads(body)["errors"][0]
        self.assertEqual(err["code"], "not_allowed_access")
        self.assertEqual([i.lower() for i in err["meta"]["identifiers"]], [email.lower()])
        self.assertEqual(err["meta"]["reason"], reason)

    # -- tests -------------------------------------------------------------------------------

    def test_allowlist_create_list_delete(self):
        c = self.clerk
        a = c.allowlist_identifiers.create(request={"identifier": "Alice@Example.COM", "notify": False})
        self.assertRegex(a.id, r"^alid_[0-9A-Za-z]{27}$")
        self.assertEqual(a.identifier, "alice@example.com")
        self.assertEqual(a.identifier_type, models.IdentifierType.EMAIL_ADDRESS)
        self.assertEqual(a.object, models.AllowlistIdentifierObject.ALLOWLIST_IDENTIFIER)
        self.assertGreater(a.created_at, 10**12, "timestamps are milliseconds")
        p = c.allowlist_identifiers.create(request={"identifier": "+12025550123"})
        self.assertEqual(p.identifier_type, models.IdentifierType.PHONE_NUMBER)

        # A bare list, and the SDK's implicit limit=10 must not truncate it.
        more = [
            c.allowlist_identifiers.create(request={"identifier": f"user{i}@example.com"})
            for i in range(10)
        ]
        listed = c.allowlist_identifiers.list()
        self.assertIsInstance(listed, list)
        ids = {x.id for x in listed}
        self.assertEqual(ids, {a.id, p.id} | {m.id for m in more})

        deleted = c.allowlist_identifiers.delete(identifier_id=a.id)
        self.assertEqual(deleted.object, "allowlist_identifier")
        self.assertEqual(deleted.id, a.id)
        self.assertTrue(deleted.deleted)
        self.assertNotIn(a.id, {x.id for x in c.allowlist_identifiers.list()})
        for x in [p, *more]:
            c.allowlist_identifiers.delete(identifier_id=x.id)
        self.assertEqual(c.allowlist_identifiers.list(), [])

    def test_blocklist_create_list_delete(self):
        c = self.clerk
        b = c.blocklist_identifiers.create(request={"identifier": "Eve@Example.com"})
        self.assertRegex(b.id, r"^blid_[0-9A-Za-z]{27}$")
        self.assertEqual(b.identifier, "eve@example.com")
        d = c.blocklist_identifiers.create(request={"identifier": "*@spam.test"})
        listed = c.blocklist_identifiers.list()
        self.assertIsInstance(listed, models.BlocklistIdentifiers)
        self.assertEqual(listed.total_count, 2)
        self.assertEqual({x.id for x in listed.data}, {b.id, d.id})

        deleted = c.blocklist_identifiers.delete(identifier_id=b.id)
        self.assertEqual(deleted.object, "blocklist_identifier")
        self.assertEqual(deleted.id, b.id)
        self.assertTrue(deleted.deleted)
        c.blocklist_identifiers.delete(identifier_id=d.id)
        empty = c.blocklist_identifiers.list()
        self.assertEqual((empty.total_count, empty.data), (0, []))

    def test_errors_duplicate_malformed_unknown_wrong_key(self):
        c = self.clerk
        a = c.allowlist_identifiers.create(request={"identifier": "dup@example.com"})
        b = c.blocklist_identifiers.create(request={"identifier": "dup@example.com"})
        try:
            with self.assertRaises(models.ClerkErrors) as ctx:
                c.allowlist_identifiers.create(request={"identifier": "DUP@example.com"})
            self.assert_clerk_error(ctx, 400, "duplicate_record")
            with self.assertRaises(models.ClerkErrors) as ctx:
                c.blocklist_identifiers.create(request={"identifier": "Dup@Example.com"})
            self.assert_clerk_error(ctx, 400, "duplicate_record")

            for bad in ["not an identifier", "example.com", "bad@@x"]:
                with self.subTest(identifier=bad):
                    with self.assertRaises(models.ClerkErrors) as ctx:
                        c.allowlist_identifiers.create(request={"identifier": bad})
                    e = self.assert_clerk_error(ctx, 422, "form_param_format_invalid")
                    self.assertEqual((e.meta or {}).get("param_name"), "identifier")
            with self.assertRaises(models.ClerkErrors) as ctx:
                c.blocklist_identifiers.create(request={"identifier": "bad@@x"})
            self.assert_clerk_error(ctx, 422, "form_param_format_invalid")

            with self.assertRaises(models.ClerkErrors) as ctx:
                c.allowlist_identifiers.create(request={"identifier": "*@example.org", "notify": True})
            self.assert_clerk_error(ctx, 422, "form_conditional_param_disallowed")

            unknown = "2xhFjEI5X2qWRvtV13BzSj8H6Dk"
            with self.assertRaises(models.ClerkErrors) as ctx:
                c.allowlist_identifiers.delete(identifier_id="alid_" + unknown)
            self.assert_clerk_error(ctx, 404, "resource_not_found")
            with self.assertRaises(models.ClerkErrors) as ctx:
                c.blocklist_identifiers.delete(identifier_id="blid_" + unknown)
            self.assert_clerk_error(ctx, 404, "resource_not_found")

            allowed_before = [x.id for x in c.allowlist_identifiers.list()]
            blocked_before = [x.id for x in c.blocklist_identifiers.list().data]
            self.assertIn(a.id, allowed_before)
            wrong = client(SECRET_KEY + "x")
            self.addCleanup(wrong.__exit__, None, None, None)
            # list declares 401 in the spec: a typed ClerkErrors.
            with self.assertRaises(models.ClerkErrors) as ctx:
                wrong.allowlist_identifiers.list()
            self.assert_clerk_error(ctx, 401, "clerk_key_invalid")
            with self.assertRaises(models.ClerkErrors) as ctx:
                wrong.blocklist_identifiers.list()
            self.assert_clerk_error(ctx, 401, "clerk_key_invalid")
            # create/delete do not declare 401: the SDK raises its untyped SDKError.
            with self.assertRaises(models.SDKError) as ctx:
                wrong.blocklist_identifiers.create(request={"identifier": "x@example.com"})
            self.assertEqual(ctx.exception.status_code, 401)
            self.assertEqual(json.loads(ctx.exception.body)["errors"][0]["code"], "clerk_key_invalid")
            with self.assertRaises(models.SDKError) as ctx:
                wrong.allowlist_identifiers.delete(identifier_id=a.id)
            self.assertEqual(ctx.exception.status_code, 401)
            self.assertEqual([x.id for x in c.allowlist_identifiers.list()], allowed_before)
            self.assertEqual([x.id for x in c.blocklist_identifiers.list().data], blocked_before)
        finally:
            c.allowlist_identifiers.delete(identifier_id=a.id)
            c.blocklist_identifiers.delete(identifier_id=b.id)

    def test_sdk_blocklist_gates_the_proxy(self):
        c = self.clerk
        email = "mallory@evil.test"
        self.assert_forwarded(email)
        b = c.blocklist_identifiers.create(request={"identifier": email})
        # No wait: the write is enforced before the API answers.
        self.assert_denied(email, "blocklist")
        self.assert_forwarded("someone@evil.test")
        c.blocklist_identifiers.delete(identifier_id=b.id)
        self.assert_forwarded(email)

    def test_update_restrictions_and_beta_restricted_to_allowlist(self):
        c = self.clerk
        r = c.instance_settings.update_restrictions(request={"allowlist": True})
        self.assertIsInstance(r, models.InstanceRestrictions)
        self.assertTrue(r.allowlist)
        self.assertTrue(r.blocklist)
        self.assertFalse(r.allowlist_blocklist_disabled_on_sign_in)
        self.assertFalse(r.block_email_subaddresses)
        self.assertFalse(r.block_disposable_email_domains)
        self.assert_denied("carol@elsewhere.test", "allowlist")

        r = c.instance_settings.update_restrictions(request={"allowlist": False, "blocklist": False})
        self.assertFalse(r.allowlist)
        self.assertFalse(r.blocklist)
        b = c.blocklist_identifiers.create(request={"identifier": "carol@elsewhere.test"})
        self.assert_forwarded("carol@elsewhere.test")  # blocklist switched off
        r = c.instance_settings.update_restrictions(request={"blocklist": True})
        self.assertTrue(r.blocklist)
        self.assertFalse(r.allowlist, "an absent field is left unchanged")
        self.assert_denied("carol@elsewhere.test", "blocklist")
        c.blocklist_identifiers.delete(identifier_id=b.id)

        s = c.beta_features.update_instance_settings(request={"restricted_to_allowlist": True})
        self.assertIsInstance(s, models.InstanceSettings)
        self.assertTrue(s.restricted_to_allowlist)
        self.assert_denied("dave@elsewhere.test", "allowlist")
        r = c.instance_settings.update_restrictions(request={})
        self.assertTrue(r.allowlist, "restricted_to_allowlist and restrictions.allowlist agree")

        s = c.beta_features.update_instance_settings(request={"restricted_to_allowlist": False})
        self.assertFalse(s.restricted_to_allowlist)
        self.assert_forwarded("dave@elsewhere.test")

    def test_instance_update_answers_204(self):
        self.assertIsNone(
            self.clerk.instance_settings.update(
                request={"allowed_origins": ["http://localhost:3000"], "test_mode": True}
            )
        )

    # -- invitations (issue #9) -------------------------------------------------------------
    # The gate's `invitations:` points at an SMTP relay on a closed loopback port, so deliveries
    # wait in the outbox; tests/sdk.rs checks the delivery rows afterwards.

    def test_allowlist_notify_true_adds_entry_with_invitation(self):
        c = self.clerk
        a = c.allowlist_identifiers.create(
            request={"identifier": "Friend-PY@Example.com", "notify": True}
        )
        self.assertEqual(a.identifier, "friend-py@example.com")
        self.assertRegex(a.invitation_id, r"^inv_[0-9A-Za-z]{27}$")
        found = c.invitations.list(query="friend-py@example.com")
        self.assertEqual([(i.id, i.status) for i in found], [(a.invitation_id, "pending")])
        with self.assertRaises(models.ClerkErrors) as ctx:
            c.allowlist_identifiers.create(request={"identifier": "*@friends.io", "notify": True})
        self.assert_clerk_error(ctx, 422, "form_conditional_param_disallowed")
        # Deleting the entry revokes its pending invitation (Clerk's side effect).
        c.allowlist_identifiers.delete(identifier_id=a.id)
        revoked = c.invitations.list(status="revoked", query="friend-py@example.com")
        self.assertEqual([i.id for i in revoked], [a.invitation_id])
        self.assertEqual(c.allowlist_identifiers.list(), [])

    def test_invitations_create_bulk_list_revoke(self):
        c = self.clerk
        inv = c.invitations.create(
            request={
                "email_address": "Invitee-PY@Example.com",
                "public_metadata": {"plan": "pro"},
                "expires_in_days": 7,
            }
        )
        self.assertRegex(inv.id, r"^inv_[0-9A-Za-z]{27}$")
        self.assertEqual(inv.email_address, "invitee-py@example.com")
        self.assertEqual(inv.status, "pending")
        self.assertEqual(inv.public_metadata, {"plan": "pro"})
        self.assertRegex(inv.url, r"^https://app\.test/accept\?token=[0-9A-Za-z]{32}$")
        with self.assertRaises(models.ClerkErrors) as ctx:
            c.invitations.create(request={"email_address": "invitee-py@example.com"})
        first = self.assert_clerk_error(ctx, 400, "duplicate_record")
        self.assertEqual(first.meta["email_addresses"], ["invitee-py@example.com"])

        bulk = c.invitations.bulk_create(
            request=[
                {"email_address": f"bulk{i}-py@example.com", "notify": False} for i in range(12)
            ][:10]
        )
        self.assertEqual(len(bulk), 10)
        # A bare list. Clerk applies limit/offset to invitations whenever given, so the SDK's
        # implicit limit=10 returns the 10 newest of the 11 (the bulk), as real Clerk does.
        listed = c.invitations.list(query="-py@example.com")
        self.assertIsInstance(listed, list)
        self.assertEqual({i.id for i in listed}, {b.id for b in bulk})
        everything = c.invitations.list(query="-py@example.com", limit=100)
        self.assertEqual({i.id for i in everything}, {inv.id} | {b.id for b in bulk})
        rest = c.invitations.list(query="-py@example.com", offset=10)
        self.assertEqual([i.id for i in rest], [inv.id])

        revoked = c.invitations.revoke(invitation_id=bulk[0].id)
        self.assertEqual(revoked.status, "revoked")
        self.assertIs(revoked.REVOKED, True)  # the SDK names the field `REVOKED`
        with self.assertRaises(models.ClerkErrors) as ctx:
            c.invitations.revoke(invitation_id=bulk[0].id)
        self.assert_clerk_error(ctx, 400, "invitation_already_revoked")
        with self.assertRaises(models.ClerkErrors) as ctx:
            c.invitations.revoke(invitation_id="inv_doesnotexist")
        self.assert_clerk_error(ctx, 404, "resource_not_found")
        pending = c.invitations.list(status="pending", query="-py@example.com", limit=100)
        self.assertEqual(len(pending), 10)
        self.assertNotIn(bulk[0].id, {i.id for i in pending})


if __name__ == "__main__":
    unittest.main()
