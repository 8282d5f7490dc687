// Peer scenario: Microsoft's JavaScript SDK (@azure/keyvault-secrets + @azure/identity) against
// `keyferry emulator`, at default settings. Only the environment points it at the emulator
// (VAULT_URL, AZURE_AUTHORITY_HOST, AZURE_TENANT_ID, AZURE_CLIENT_ID/AZURE_CLIENT_SECRET or
// IDENTITY_ENDPOINT/IDENTITY_HEADER) and NODE_EXTRA_CA_CERTS trusts its CA. PEER_CREDENTIAL picks
// client-secret or managed-identity; ADMIN_URL is the emulator's admin API.
"use strict";
const crypto = require("node:crypto");
const { SecretClient } = require("@azure/keyvault-secrets");
const { ClientSecretCredential, ManagedIdentityCredential } = require("@azure/identity");

const KIND = process.env.PEER_CREDENTIAL || "client-secret";
const PREFIX = `js-${KIND.slice(0, 2)}-${crypto.randomBytes(4).toString("hex")}`;
const CANARY = `canary-${crypto.randomBytes(16).toString("hex")}`;
const name = (s) => `${PREFIX}-${s}`;

async function admin(method, path, body) {
  const r = await fetch(process.env.ADMIN_URL + path, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return text ? JSON.parse(text) : null;
}

function credential() {
  if (KIND === "client-secret") {
    // Authority from AZURE_AUTHORITY_HOST, as @azure/identity reads it by default. The one setting
    // changed: MSAL Node sends instance discovery for an unknown authority host to the hard-coded
    // login.microsoftonline.com, which cannot be the emulator (docs/emulator.md).
    return new ClientSecretCredential(process.env.AZURE_TENANT_ID, process.env.AZURE_CLIENT_ID, process.env.AZURE_CLIENT_SECRET, {
      disableInstanceDiscovery: true,
    });
  }
  if (KIND === "managed-identity") return new ManagedIdentityCredential();
  throw new Error(`PEER_CREDENTIAL must be client-secret or managed-identity, not ${KIND}`);
}

const forged = {
  getToken: async () => ({
    token: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL3ZhdWx0LmF6dXJlLm5ldCJ9.Zm9yZ2Vk",
    expiresOnTimestamp: Date.now() + 3600_000,
  }),
};

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function expectStatus(promise, status) {
  try {
    await promise;
  } catch (e) {
    assert(e.statusCode === status, `expected HTTP ${status}, got ${e.statusCode}: ${e.message}`);
    return e;
  }
  throw new Error(`expected HTTP ${status}, the call succeeded`);
}

async function throttled() {
  const c = await admin("GET", "/counters");
  return ((c.operations.get_secret || {}).statuses || {})["429"] || 0;
}

const checks = [
  ["set/get with tags and contentType", async (c) => {
    const s = await c.setSecret(name("a"), CANARY, { contentType: "text/plain", tags: { team: "peers" } });
    const got = await c.getSecret(name("a"));
    assert(got.value === CANARY && got.properties.version === s.properties.version, "value or version differs");
    assert(got.properties.contentType === "text/plain" && got.properties.tags.team === "peers", "contentType or tags differ");
  }],
  ["versions: two sets, get by version, list versions", async (c) => {
    const v1 = (await c.setSecret(name("v"), "one")).properties.version;
    const v2 = (await c.setSecret(name("v"), "two")).properties.version;
    assert((await c.getSecret(name("v"), { version: v1 })).value === "one", "get by version");
    const seen = new Set();
    for await (const p of c.listPropertiesOfSecretVersions(name("v"))) seen.add(p.version);
    assert(seen.size === 2 && seen.has(v1) && seen.has(v2), `versions listed: ${[...seen]}`);
  }],
  ["paging: list follows nextLink past 25 items", async (c) => {
    for (let i = 0; i < 27; i++) await c.setSecret(name(`p${i}`), "x");
    let pages = 0, listed = 0;
    for await (const page of c.listPropertiesOfSecrets().byPage()) {
      pages++;
      listed += page.filter((p) => p.name.startsWith(name("p"))).length;
    }
    assert(pages >= 2 && listed === 27, `${pages} pages, ${listed} listed`);
  }],
  ["not found -> 404", async (c) => { await expectStatus(c.getSecret(name("missing")), 404); }],
  ["disabled -> 403", async (c) => {
    const s = await c.setSecret(name("d"), "x");
    await c.updateSecretProperties(name("d"), s.properties.version, { enabled: false });
    await expectStatus(c.getSecret(name("d")), 403);
  }],
  ["delete, recover, delete, purge", async (c) => {
    await c.setSecret(name("del"), "x");
    await (await c.beginDeleteSecret(name("del"))).pollUntilDone();
    assert((await c.getDeletedSecret(name("del"))).name === name("del"), "deleted secret");
    await (await c.beginRecoverDeletedSecret(name("del"))).pollUntilDone();
    assert((await c.getSecret(name("del"))).value === "x", "after recover");
    await (await c.beginDeleteSecret(name("del"))).pollUntilDone();
    await c.purgeDeletedSecret(name("del"));
    await expectStatus(c.getDeletedSecret(name("del")), 404);
  }],
  ["backup, purge, restore", async (c) => {
    await c.setSecret(name("b"), "backed-up");
    const blob = await c.backupSecret(name("b"));
    await (await c.beginDeleteSecret(name("b"))).pollUntilDone();
    await c.purgeDeletedSecret(name("b"));
    await c.restoreSecretBackup(blob);
    assert((await c.getSecret(name("b"))).value === "backed-up", "after restore");
  }],
  ["invalid name -> 400", async (c) => { await expectStatus(c.setSecret(`${PREFIX}_bad_name`, "x"), 400); }],
  ["429 with Retry-After: the SDK waits and succeeds", async (c) => {
    await c.setSecret(name("t"), "throttled");
    const before = await throttled();
    await admin("POST", "/faults", { fault: "throttle", operation: "get_secret", count: 1, retry_after_secs: 1 });
    assert((await c.getSecret(name("t"))).value === "throttled", "value after throttling");
    const after = await throttled();
    assert(after === before + 1, `429s served: before ${before} after ${after}`);
  }],
  ["forged token -> 401", async () => {
    await expectStatus(new SecretClient(process.env.VAULT_URL, forged).getSecret(name("a")), 401);
  }],
];

(async () => {
  const client = new SecretClient(process.env.VAULT_URL, credential());
  let passed = 0, failed = 0;
  for (const [label, fn] of checks) {
    try {
      await fn(client);
      passed++;
      console.log(`ok   js/${KIND}: ${label}`);
    } catch (e) {
      failed++;
      console.log(`FAIL js/${KIND}: ${label}: ${String(e && e.message).split(CANARY).join("<canary>")}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();
