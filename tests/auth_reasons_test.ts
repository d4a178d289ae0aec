/**
 * `auth.mode: either` with local users and an OIDC provider: a token that
 * fails is logged and counted with the reason of the verifier it was meant
 * for. Butler's own tokens are HS256, so an HS256 token gets the local
 * verifier's reason (expired, user removed, wrong secret); any other
 * algorithm gets the provider's. The answer is the same 401 either way.
 */

import assert from "node:assert/strict";
import { type OidcSim, startOidcSim } from "./sim/oidc_sim.ts";
import { bearer, type Stack, startStack } from "./support/harness.ts";
import { hashPassword } from "../src/auth/password.ts";
import { issueUserToken } from "../src/auth/jwt_local.ts";

const SECRET = "auth-reasons-secret-0123456789abcdef";
// Cost 4: the lowest bcrypt allows; no test here logs in with a password.
const HASH = await hashPassword("unused-password", 4);

function configFor(issuer: string, users: string[]): string {
  return `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
auth:
  mode: either
  jwt_secret: ${SECRET}
  token_expiry: 1h
  oidc:
    issuer: ${issuer}
    client_id: butler
    role_claim_path: realm_access.roles
users:${
    users.map((name) => `
  - name: ${name}
    password_hash: "${HASH}"
    allow_models: ["llama3.2"]`).join("")
  }
role_policies:
  reader:
    allow_models: ["llama3.2"]
`;
}

function chat(stack: Stack, token: string): Promise<Response> {
  return fetch(`${stack.url}/api/chat`, {
    method: "POST",
    headers: { "content-type": "application/json", ...bearer(token) },
    body: JSON.stringify({
      model: "llama3.2",
      messages: [{ role: "user", content: "hello" }],
      stream: false,
    }),
  });
}

function refusalReasons(stack: Stack): unknown[] {
  return stack.logs
    .filter((line) => line.msg === "refused")
    .map((line) => line.reason);
}

/** What reached Ollama, without `/healthz`'s probes of `/api/version`. */
function forwarded(stack: Stack) {
  return stack.sim.records.filter((record) => record.path !== "/api/version");
}

/** Sends `token`, expects the usual 401, returns the reason logged for it. */
async function refusedWith(stack: Stack, token: string): Promise<unknown> {
  const before = refusalReasons(stack).length;
  const response = await chat(stack, token);
  assert.equal(response.status, 401);
  assert.equal(
    response.headers.get("www-authenticate"),
    'Bearer realm="butler"',
  );
  assert.deepEqual(await response.json(), { error: "unauthorized" });
  const reasons = refusalReasons(stack);
  assert.equal(reasons.length, before + 1);
  return reasons.at(-1);
}

async function waitForOidcReady(stack: Stack): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    const health = await (await fetch(`${stack.url}/healthz`)).json();
    if (health.oidc === "ready") return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error("OIDC never became ready");
}

async function withStack(
  users: string[],
  fn: (stack: Stack, provider: OidcSim) => Promise<void>,
): Promise<void> {
  const provider = await startOidcSim();
  let stack: Stack | undefined;
  try {
    stack = await startStack(configFor(provider.issuer, users));
    await waitForOidcReady(stack);
    await fn(stack, provider);
  } finally {
    await stack?.close();
    await provider.close();
  }
}

const secret = new TextEncoder().encode(SECRET);
const person = {
  sub: "id-dave",
  preferred_username: "dave",
  realm_access: { roles: ["reader"] },
};

Deno.test("either with OIDC: an expired local token is logged as token_expired", async () => {
  await withStack(["alice"], async (stack) => {
    // Issued by this Butler's secret two hours ago, valid for one hour.
    const expired = await issueUserToken("alice", {
      secret,
      expiryMs: 3_600_000,
      now: Date.now() - 7_200_000,
    });
    assert.equal(await refusedWith(stack, expired.token), "token_expired");

    const metrics = await (await fetch(`${stack.url}/metrics`)).text();
    assert.match(
      metrics,
      /butler_refusals_total\{[^}]*reason="token_expired"\} 1\n/,
    );
    assert.doesNotMatch(metrics, /reason="token_algorithm_not_allowed"/);
    assert.equal(forwarded(stack).length, 0);
  });
});

Deno.test("either with OIDC: a removed user's token is logged as token_user_unknown", async () => {
  await withStack(["alice", "bob"], async (stack, provider) => {
    const alice = await issueUserToken("alice", { secret, expiryMs: 60_000 });
    const bob = await issueUserToken("bob", { secret, expiryMs: 60_000 });
    for (const token of [alice.token, bob.token]) {
      const response = await chat(stack, token);
      assert.equal(response.status, 200);
      await response.body?.cancel();
    }

    // bob leaves the config; the provider stays the same.
    await Deno.writeTextFile(
      stack.configPath,
      configFor(provider.issuer, ["alice"]).replace(
        "{{UPSTREAM}}",
        stack.sim.url,
      ),
    );
    assert.equal(await stack.butler.reload(), true);
    assert.equal(await refusedWith(stack, bob.token), "token_user_unknown");

    const still = await chat(stack, alice.token);
    assert.equal(still.status, 200);
    await still.body?.cancel();
    assert.equal(forwarded(stack).length, 3);

    const metrics = await (await fetch(`${stack.url}/metrics`)).text();
    assert.match(
      metrics,
      /butler_refusals_total\{[^}]*reason="token_user_unknown"\} 1\n/,
    );
  });
});

Deno.test("either with OIDC: a local token with another secret is the local verifier's failure", async () => {
  await withStack(["alice"], async (stack) => {
    const forged = await issueUserToken("alice", {
      secret: new TextEncoder().encode("another-secret-0123456789abcdefgh"),
      expiryMs: 60_000,
    });
    assert.equal(
      await refusedWith(stack, forged.token),
      "token_signature_invalid",
    );
    assert.equal(forwarded(stack).length, 0);
  });
});

Deno.test("either with local users: provider tokens keep the provider's reasons", async () => {
  await withStack(["alice"], async (stack, provider) => {
    const valid = await provider.sign(person);
    const ok = await chat(stack, valid);
    assert.equal(ok.status, 200);
    await ok.body?.cancel();

    // Signed with a key the provider never published, under its current kid.
    const { kid } = provider.publicJwk() as JsonWebKey & { kid: string };
    const badSignature = await provider.sign(person, { key: "unknown", kid });
    assert.equal(
      await refusedWith(stack, badSignature),
      "token_signature_invalid",
    );
    const expired = await provider.sign(person, {
      expiresIn: Math.floor(Date.now() / 1000) - 600,
    });
    assert.equal(await refusedWith(stack, expired), "token_expired");
    const otherAlgorithm = await provider.sign(person, { alg: "PS256" });
    assert.equal(
      await refusedWith(stack, otherAlgorithm),
      "token_algorithm_not_allowed",
    );
    assert.equal(forwarded(stack).length, 1);
  });
});
