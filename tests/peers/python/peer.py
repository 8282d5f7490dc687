"""Peer scenario: Microsoft's Python SDK (azure-keyvault-secrets + azure-identity) against
`keyferry emulator`, at default settings.

Only the environment points the SDK at the emulator: VAULT_URL, AZURE_AUTHORITY_HOST,
AZURE_TENANT_ID, AZURE_CLIENT_ID/AZURE_CLIENT_SECRET (client secret) or
IDENTITY_ENDPOINT/IDENTITY_HEADER (managed identity), REQUESTS_CA_BUNDLE (trust).
PEER_CREDENTIAL picks `client-secret` or `managed-identity`. ADMIN_URL is the emulator's admin API
(fault injection, counters). Prints one line per check and a closing `N passed, N failed` line.
"""

import json
import os
import ssl
import sys
import time
import urllib.request
import uuid

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

VAULT_URL = os.environ["VAULT_URL"]
ADMIN_URL = os.environ["ADMIN_URL"]
KIND = os.environ.get("PEER_CREDENTIAL", "client-secret")
CANARY = "canary-" + uuid.uuid4().hex
PREFIX = "py-" + KIND[:2] + "-" + uuid.uuid4().hex[:8]
_ssl = ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])


def admin(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(ADMIN_URL + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, context=_ssl) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def credential():
    if KIND == "client-secret":
        # Authority from AZURE_AUTHORITY_HOST, as azure-identity reads it by default. The one
        # setting changed: MSAL Python sends instance discovery for an authority host it does not
        # know to the hard-coded https://login.microsoftonline.com/common/discovery/instance, not
        # to the authority host, so it cannot reach the emulator (docs/emulator.md).
        return ClientSecretCredential(
            os.environ["AZURE_TENANT_ID"],
            os.environ["AZURE_CLIENT_ID"],
            os.environ["AZURE_CLIENT_SECRET"],
            disable_instance_discovery=True,
        )
    if KIND == "managed-identity":
        return ManagedIdentityCredential()
    raise SystemExit(f"PEER_CREDENTIAL must be client-secret or managed-identity, not {KIND!r}")


class ForgedCredential:
    """Hands out a JWT-shaped token the emulator never issued."""

    def get_token(self, *scopes, **kwargs):
        forged = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL3ZhdWx0LmF6dXJlLm5ldCJ9.Zm9yZ2Vk"
        return AccessToken(forged, int(time.time()) + 3600)


def name(suffix):
    return f"{PREFIX}-{suffix}"


def expect_status(fn, status):
    try:
        fn()
    except HttpResponseError as e:
        assert e.status_code == status, f"expected {status}, got {e.status_code}: {e.message}"
        return e
    raise AssertionError(f"expected HTTP {status}, the call succeeded")


def main():
    client = SecretClient(VAULT_URL, credential())
    checks = []

    def check(label):
        def register(fn):
            checks.append((label, fn))
            return fn
        return register

    @check("set/get with tags and contentType")
    def _():
        s = client.set_secret(name("a"), CANARY, content_type="text/plain", tags={"team": "peers"})
        got = client.get_secret(name("a"))
        assert got.value == CANARY and got.properties.version == s.properties.version
        assert got.properties.content_type == "text/plain" and got.properties.tags == {"team": "peers"}

    @check("versions: two sets, get by version, list versions")
    def _():
        v1 = client.set_secret(name("v"), "one").properties.version
        v2 = client.set_secret(name("v"), "two").properties.version
        assert v1 != v2
        assert client.get_secret(name("v"), v1).value == "one"
        assert client.get_secret(name("v")).value == "two"
        versions = {p.version for p in client.list_properties_of_secret_versions(name("v"))}
        assert versions == {v1, v2}, versions

    @check("paging: list follows nextLink past 25 items")
    def _():
        for i in range(27):
            client.set_secret(name(f"p{i}"), "x")
        pages = list(client.list_properties_of_secrets().by_page())
        listed = [p.name for page in pages for p in page if p.name.startswith(name("p"))]
        assert len(pages) >= 2, f"{len(pages)} page(s)"
        assert len(listed) == 27, len(listed)

    @check("not found -> 404 ResourceNotFoundError")
    def _():
        try:
            client.get_secret(name("missing"))
        except ResourceNotFoundError as e:
            assert e.status_code == 404
            return
        raise AssertionError("no error")

    @check("disabled -> 403")
    def _():
        client.set_secret(name("d"), "x")
        client.update_secret_properties(name("d"), enabled=False)
        e = expect_status(lambda: client.get_secret(name("d")), 403)
        assert "disabled" in e.message.lower(), e.message

    @check("delete, recover, delete, purge")
    def _():
        client.set_secret(name("del"), "x")
        client.begin_delete_secret(name("del")).result()
        assert client.get_deleted_secret(name("del")).name == name("del")
        client.begin_recover_deleted_secret(name("del")).result()
        assert client.get_secret(name("del")).value == "x"
        client.begin_delete_secret(name("del")).result()
        client.purge_deleted_secret(name("del"))
        expect_status(lambda: client.get_deleted_secret(name("del")), 404)

    @check("backup, purge, restore")
    def _():
        client.set_secret(name("b"), "backed-up")
        blob = client.backup_secret(name("b"))
        client.begin_delete_secret(name("b")).result()
        client.purge_deleted_secret(name("b"))
        client.restore_secret_backup(blob)
        assert client.get_secret(name("b")).value == "backed-up"

    @check("invalid name -> 400")
    def _():
        expect_status(lambda: client.set_secret(PREFIX + "_bad_name", "x"), 400)

    @check("429 with Retry-After: the SDK waits and succeeds")
    def _():
        client.set_secret(name("t"), "throttled")
        before = admin("GET", "/counters")["operations"].get("get_secret", {}).get("statuses", {}).get("429", 0)
        admin("POST", "/faults", {"fault": "throttle", "operation": "get_secret", "count": 1, "retry_after_secs": 1})
        seen = []
        got = client.get_secret(name("t"), raw_response_hook=lambda r: seen.append(r.http_response.status_code))
        after = admin("GET", "/counters")["operations"]["get_secret"]["statuses"].get("429", 0)
        assert got.value == "throttled"
        assert after == before + 1, (before, after)

    @check("forged token -> 401")
    def _():
        forged = SecretClient(VAULT_URL, ForgedCredential())
        try:
            forged.get_secret(name("a"))
        except ClientAuthenticationError as e:
            assert e.status_code == 401, e.status_code
            return
        except HttpResponseError as e:
            assert e.status_code == 401, e.status_code
            return
        raise AssertionError("a forged token was accepted")

    passed = failed = 0
    for label, fn in checks:
        try:
            fn()
        except Exception as e:  # report every check, then fail the run
            failed += 1
            text = str(e).replace(CANARY, "<canary>")
            print(f"FAIL python/{KIND}: {label}: {type(e).__name__}: {text}")
        else:
            passed += 1
            print(f"ok   python/{KIND}: {label}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
