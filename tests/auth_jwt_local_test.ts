import assert from "node:assert/strict";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import type { UserPolicy } from "../src/config/policy.ts";
import {
  issueUserToken,
  LOCAL_TOKEN_AUDIENCE,
  LOCAL_TOKEN_ISSUER,
  reasonForTokenError,
  verifyUserToken,
} from "../src/auth/jwt_local.ts";

const secret = new TextEncoder().encode("0123456789abcdef0123456789abcdef");
const otherSecret = new TextEncoder().encode(
  "fedcba9876543210fedcba9876543210",
);
const DAY_MS = 86_400_000;
const T0 = Date.UTC(2026, 0, 15, 12, 0, 0);

function user(name: string): UserPolicy {
  return {
    name,
    passwordHash:
      "$2b$04$KldNGSGMLS2Q3QuY.VzqFefUS.N/kF6/ahdF4qcfgsNDHUSQchlJi",
    origin: `users.${name}`,
    allowModels: ["*"],
    denyModels: [],
    denyPromptPatterns: [],
    capMode: "refuse",
    allowContext: false,
    allowManagement: false,
  };
}

const users = [user("alice"), user("bob")];

Deno.test("issueUserToken: HS256, sub, iss, aud, iat and exp from the expiry", async () => {
  const { token, expiresAt } = await issueUserToken("alice", {
    secret,
    expiryMs: DAY_MS,
    now: T0,
  });

  assert.deepEqual(decodeProtectedHeader(token), { alg: "HS256", typ: "JWT" });
  assert.deepEqual(decodeJwt(token), {
    sub: "alice",
    iss: LOCAL_TOKEN_ISSUER,
    aud: LOCAL_TOKEN_AUDIENCE,
    iat: T0 / 1000,
    exp: T0 / 1000 + 86_400,
  });
  assert.equal(expiresAt, "2026-01-16T12:00:00.000Z");
});

Deno.test("verifyUserToken accepts a fresh token of a configured user", async () => {
  const { token } = await issueUserToken("bob", { secret, expiryMs: DAY_MS });

  const result = await verifyUserToken(token, { secret, users });

  assert.ok("user" in result, JSON.stringify(result));
  assert.equal(result.user.name, "bob");
});

Deno.test("verifyUserToken: expiry, with 30 s of tolerance", async () => {
  const { token } = await issueUserToken("alice", {
    secret,
    expiryMs: DAY_MS,
    now: T0,
  });
  const expiry = T0 + DAY_MS;

  for (
    const [now, accepted] of [[expiry - 1_000, true], [expiry + 29_000, true], [
      expiry + 31_000,
      false,
    ]] as const
  ) {
    const result = await verifyUserToken(token, { secret, users, now });
    if (accepted) {
      assert.ok("user" in result, `at exp${(now - expiry) / 1000}s`);
    } else {
      assert.deepEqual(result, { reason: "token_expired" });
    }
  }
});

Deno.test("verifyUserToken: a token issued long ago is expired now", async () => {
  const { token } = await issueUserToken("alice", {
    secret,
    expiryMs: DAY_MS,
    now: Date.now() - 2 * DAY_MS,
  });

  assert.deepEqual(await verifyUserToken(token, { secret, users }), {
    reason: "token_expired",
  });
});

Deno.test("verifyUserToken: a user removed from the config after login is refused", async () => {
  const { token } = await issueUserToken("alice", { secret, expiryMs: DAY_MS });

  const result = await verifyUserToken(token, {
    secret,
    users: users.filter((candidate) => candidate.name !== "alice"),
  });

  assert.deepEqual(result, { reason: "token_user_unknown" });
});

Deno.test("verifyUserToken: another secret, algorithm, issuer or audience is refused", async () => {
  function signed(
    alg: string,
    key: Uint8Array,
    claims: { iss?: string; aud?: string } = {},
  ): Promise<string> {
    return new SignJWT({})
      .setProtectedHeader({ alg })
      .setSubject("alice")
      .setIssuer(claims.iss ?? LOCAL_TOKEN_ISSUER)
      .setAudience(claims.aud ?? LOCAL_TOKEN_AUDIENCE)
      .setIssuedAt()
      .setExpirationTime("1h")
      .sign(key);
  }
  const cases: [string, Promise<string>][] = [
    ["token_signature_invalid", signed("HS256", otherSecret)],
    [
      "token_algorithm_not_allowed",
      signed("HS512", new Uint8Array(64).fill(7)),
    ],
    ["token_issuer_invalid", signed("HS256", secret, { iss: "someone-else" })],
    [
      "token_audience_invalid",
      signed("HS256", secret, { aud: "someone-else" }),
    ],
    ["token_malformed", Promise.resolve("not.a.jwt")],
  ];

  for (const [reason, token] of cases) {
    assert.deepEqual(
      await verifyUserToken(await token, { secret, users }),
      { reason },
      reason,
    );
  }
});

Deno.test("verifyUserToken: a token without sub or exp is refused", async () => {
  const withoutSub = await new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setIssuer(LOCAL_TOKEN_ISSUER)
    .setAudience(LOCAL_TOKEN_AUDIENCE)
    .setExpirationTime("1h")
    .sign(secret);
  const withoutExp = await new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setSubject("alice")
    .setIssuer(LOCAL_TOKEN_ISSUER)
    .setAudience(LOCAL_TOKEN_AUDIENCE)
    .sign(secret);

  assert.deepEqual(await verifyUserToken(withoutSub, { secret, users }), {
    reason: "token_claim_invalid",
  });
  assert.deepEqual(await verifyUserToken(withoutExp, { secret, users }), {
    reason: "token_claim_invalid",
  });
});

Deno.test("reasonForTokenError: errors not from jose are token_invalid", () => {
  assert.equal(reasonForTokenError(new TypeError("boom")), "token_invalid");
});
