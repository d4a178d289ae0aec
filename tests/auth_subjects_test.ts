/**
 * Counters live under subject keys. A person known to the identity provider
 * and a user of the config who happen to share a name must not share them.
 */

import assert from "node:assert/strict";
import { compilePolicy } from "../src/config/load.ts";
import { authenticate } from "../src/auth/authenticate.ts";
import { ApiKeyIndex } from "../src/auth/api_keys.ts";
import { issueUserToken } from "../src/auth/jwt_local.ts";
import { hashPassword } from "../src/auth/password.ts";
import type { OidcVerifier } from "../src/auth/oidc.ts";
import { isRefusal } from "../src/errors/refusal.ts";

const SECRET = "a-jwt-secret-of-at-least-32-bytes-long!";

Deno.test("a provider's alice and the config's alice have separate subject keys", async () => {
  const policy = await compilePolicy(
    `
upstream: http://127.0.0.1:11434
auth:
  mode: either
  jwt_secret: ${SECRET}
  oidc:
    issuer: http://127.0.0.1:9/realms/test
    client_id: butler
    role_claim_path: roles
users:
  - name: alice
    password_hash: "${await hashPassword("pw", 4)}"
    allow_models: ["*"]
role_policies:
  reader:
    allow_models: ["llama3.2"]
`,
    { path: "butler.yaml" },
  );
  // Stands in for the provider: every token is "alice" with role reader.
  const oidc = {
    verify: () =>
      Promise.resolve({ username: "alice", roles: ["reader"], claims: {} }),
  } as unknown as OidcVerifier;
  const context = { policy, keys: new ApiKeyIndex(policy.clients), oidc };

  const local = await issueUserToken("alice", {
    secret: policy.auth.jwtSecret!,
    expiryMs: 60_000,
  });
  const asLocal = await authenticate(
    new Headers({ authorization: `Bearer ${local.token}` }),
    context,
  );
  // Any JWT-shaped value the local check refuses goes to the provider.
  const foreign = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
  const asProvider = await authenticate(
    new Headers({ authorization: `Bearer ${foreign}` }),
    context,
  );

  assert.ok(!isRefusal(asLocal) && !isRefusal(asProvider));
  assert.equal(asLocal.auth, "jwt");
  assert.equal(asProvider.auth, "oidc");
  assert.equal(asLocal.user, "alice");
  assert.equal(asProvider.user, "alice");
  assert.notEqual(asLocal.subjects[0].key, asProvider.subjects[0].key);
});
