/**
 * OIDC federation end to end: the provider simulator signs real tokens, a
 * real Butler fetches its discovery document and keys over a socket, and the
 * Ollama simulator's record proves which requests were forwarded. Every
 * refused token leaves no record.
 */

import assert from "node:assert/strict";
import { base64url, SignJWT } from "jose";
import { type OidcSim, startOidcSim } from "./sim/oidc_sim.ts";
import { type SimRecord, startOllamaSim } from "./sim/ollama_sim.ts";
import {
  bearer,
  KEYS,
  type Stack,
  startStack,
  writeConfig,
} from "./support/harness.ts";
import { startButler } from "../src/serve.ts";
import type { OidcVerifierOptions } from "../src/auth/oidc.ts";
import { Logger } from "../src/observe/log.ts";
import { loadPolicy } from "../src/config/load.ts";
import { requiredPermissions } from "../src/permissions.ts";

/** `either`: API keys keep working beside OIDC. */
function configFor(issuer: string): string {
  return `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
auth:
  mode: either
  oidc:
    issuer: ${issuer}
    client_id: butler
    role_claim_path: realm_access.roles
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["*"]
role_policies:
  reader:
    allow_models: ["llama3.2"]
    deny_prompt_patterns: ["(?i)secret"]
  coder:
    allow_models: ["llama3.2", "qwen2.5"]
    deny_models: ["llama3.2:1b"]
  limited:
    allow_models: ["llama3.2"]
    rate_limit: 2/min
user_overrides:
  carol:
    allow_models: ["nomic-embed-text"]
`;
}

/** A person with roles, as the provider would describe them. */
function claims(username: string, roles?: string[]): Record<string, unknown> {
  return {
    sub: `id-${username}`,
    preferred_username: username,
    ...(roles === undefined ? {} : { realm_access: { roles } }),
  };
}

/**
 * The provider, Ollama and Butler on loopback. `oidc` shortens Butler's
 * discovery backoff and key refetch cooldown where a test needs it.
 */
async function withStack(
  fn: (stack: Stack, provider: OidcSim) => Promise<void>,
  options: {
    oidc?: OidcVerifierOptions;
    providerDown?: boolean;
    issuer?: (provider: OidcSim) => string;
  } = {},
): Promise<void> {
  const provider = await startOidcSim();
  provider.setDown(options.providerDown ?? false);
  const issuer = options.issuer?.(provider) ?? provider.issuer;
  let stack: Stack | undefined;
  try {
    stack = options.oidc === undefined
      ? await startStack(configFor(issuer))
      : await startStackWith(configFor(issuer), options.oidc);
    if (!options.providerDown && options.issuer === undefined) {
      await waitForOidc(stack, "ready");
    }
    await fn(stack, provider);
  } finally {
    await stack?.close();
    await provider.close();
  }
}

/** `startStack`, with OIDC timings passed to `startButler`. */
async function startStackWith(
  config: string,
  oidc: OidcVerifierOptions,
): Promise<Stack> {
  const sim = await startOllamaSim({ chunkDelayMs: 5 });
  const configPath = await writeConfig(
    config.replaceAll("{{UPSTREAM}}", sim.url),
  );
  const logs: Record<string, unknown>[] = [];
  const log = new Logger({ sink: (line) => logs.push(JSON.parse(line)) });
  try {
    const butler = await startButler({ configPath, port: 0, log, oidc });
    return {
      sim,
      butler,
      url: `http://127.0.0.1:${butler.addr.port}`,
      logs,
      configPath,
      async close() {
        await butler.shutdown();
        await sim.close();
      },
    };
  } catch (error) {
    await sim.close();
    throw error;
  }
}

async function health(stack: Stack): Promise<Record<string, unknown>> {
  const response = await fetch(`${stack.url}/healthz`);
  return await response.json();
}

async function waitForOidc(stack: Stack, state: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  let last: unknown;
  while (Date.now() < deadline) {
    last = (await health(stack)).oidc;
    if (last === state) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`OIDC state stayed ${last}, wanted ${state}`);
}

function chat(
  stack: Stack,
  token: string,
  options: { model?: string; content?: string } = {},
): Promise<Response> {
  return fetch(`${stack.url}/api/chat`, {
    method: "POST",
    headers: { "content-type": "application/json", ...bearer(token) },
    body: JSON.stringify({
      model: options.model ?? "llama3.2",
      messages: [{ role: "user", content: options.content ?? "hello" }],
      stream: false,
    }),
  });
}

async function statusOf(response: Promise<Response>): Promise<number> {
  const answered = await response;
  await answered.body?.cancel();
  return answered.status;
}

/** What reached Ollama, without `/healthz`'s probes of `/api/version`. */
function forwarded(stack: Stack): SimRecord[] {
  return stack.sim.records.filter((record) => record.path !== "/api/version");
}

function refusalReasons(stack: Stack): unknown[] {
  return stack.logs
    .filter((line) => line.msg === "refused")
    .map((line) => line.reason);
}

/** A token the provider's key never signed: `alg: none`. */
function unsignedToken(provider: OidcSim): string {
  const now = Math.floor(Date.now() / 1000);
  const encode = (value: unknown) =>
    base64url.encode(new TextEncoder().encode(JSON.stringify(value)));
  return `${encode({ alg: "none", typ: "JWT" })}.${
    encode({
      ...claims("mallory", ["coder"]),
      iss: provider.issuer,
      aud: provider.audience,
      iat: now,
      exp: now + 300,
    })
  }.`;
}

/** HS256 keyed with the provider's public key, which anyone can fetch. */
async function publicKeyHmacToken(provider: OidcSim): Promise<string> {
  const jwk = provider.publicJwk() as JsonWebKey & { kid: string };
  const secret = new TextEncoder().encode(JSON.stringify(jwk));
  return await new SignJWT(claims("mallory", ["coder"]))
    .setProtectedHeader({ alg: "HS256", kid: jwk.kid, typ: "JWT" })
    .setIssuer(provider.issuer)
    .setAudience(provider.audience)
    .setIssuedAt()
    .setExpirationTime("5m")
    .sign(secret);
}

Deno.test("a valid provider token with a role is allowed by that role's policy", async () => {
  await withStack(async (stack, provider) => {
    const token = await provider.sign(claims("dave", ["reader"]));
    const response = await chat(stack, token);
    assert.equal(response.status, 200);
    assert.equal((await response.json()).done, true);
    // reader does not allow qwen2.5.
    assert.equal(
      await statusOf(chat(stack, token, { model: "qwen2.5:7b" })),
      403,
    );

    assert.equal(forwarded(stack).length, 1);
    const headers = forwarded(stack)[0].headers;
    assert.equal(headers["x-butler-user"], "dave");
    assert.equal(headers["x-butler-client"], undefined);
    assert.equal(headers["authorization"], undefined);
    const logged = stack.logs.find((line) => line.msg === "response");
    assert.equal(logged?.user, "dave");
    assert.equal(logged?.auth, "oidc");
    assert.ok(!JSON.stringify(stack.logs).includes(token));
  });
});

Deno.test("forged, foreign and stale provider tokens are refused and never forwarded", async () => {
  await withStack(async (stack, provider) => {
    const person = claims("mallory", ["coder"]);
    const past = Math.floor(Date.now() / 1000) - 600;
    const cases: [string, string, number, string][] = [
      [
        "wrong issuer",
        await provider.sign(person, { issuer: "http://127.0.0.1:1/other" }),
        401,
        "token_issuer_invalid",
      ],
      [
        "wrong audience",
        await provider.sign(person, { audience: "another-app" }),
        401,
        "token_audience_invalid",
      ],
      [
        "algorithm the provider does not publish",
        await provider.sign(person, { alg: "PS256" }),
        401,
        "token_algorithm_not_allowed",
      ],
      [
        "expired",
        await provider.sign(person, { expiresIn: past }),
        401,
        "token_expired",
      ],
      [
        "not yet valid",
        await provider.sign(person, { notBefore: "10m", expiresIn: "20m" }),
        401,
        "token_not_yet_valid",
      ],
      [
        "unknown kid",
        await provider.sign(person, { key: "unknown" }),
        401,
        "token_key_unknown",
      ],
      [
        "no exp",
        await provider.sign(person, { omitExpiry: true }),
        401,
        "token_claim_invalid",
      ],
      ["alg none", unsignedToken(provider), 401, "token_algorithm_not_allowed"],
      [
        "HS256 keyed with the public key",
        await publicKeyHmacToken(provider),
        401,
        "token_algorithm_not_allowed",
      ],
      [
        "no roles claim",
        await provider.sign(claims("mallory")),
        403,
        "no_matching_role",
      ],
      [
        "only roles Butler does not know",
        await provider.sign(claims("mallory", ["admin", "owner"])),
        403,
        "no_matching_role",
      ],
    ];
    for (const [name, token, status] of cases) {
      const response = await chat(stack, token);
      assert.equal(response.status, status, name);
      assert.equal(typeof (await response.json()).error, "string", name);
    }
    assert.deepEqual(
      refusalReasons(stack),
      cases.map(([, , , reason]) => reason),
    );
    assert.equal(forwarded(stack).length, 0);
    // A person refused for their roles is named in the log and the metrics.
    const noRole = stack.logs.filter((line) =>
      line.reason === "no_matching_role"
    );
    assert.deepEqual(noRole.map((line) => [line.user, line.auth]), [
      ["mallory", "oidc"],
      ["mallory", "oidc"],
    ]);
    assert.match(
      await (await fetch(`${stack.url}/metrics`)).text(),
      /butler_refusals_total\{client="-",user="mallory",auth="oidc",reason="no_matching_role"\} 2/,
    );
  });
});

Deno.test("roles merge: union of allowances, every role's deny rules", async () => {
  await withStack(async (stack, provider) => {
    const both = await provider.sign(claims("dave", ["reader", "coder"]));
    // Allowed by one role or the other: the union.
    assert.equal(await statusOf(chat(stack, both)), 200);
    assert.equal(
      await statusOf(chat(stack, both, { model: "qwen2.5:7b" })),
      200,
    );
    // reader allows every llama3.2 tag, but coder denies llama3.2:1b.
    assert.equal(
      await statusOf(chat(stack, both, { model: "llama3.2:1b" })),
      403,
    );
    // coder has no prompt patterns, but reader's still apply.
    assert.equal(
      await statusOf(chat(stack, both, {
        model: "qwen2.5:7b",
        content: "tell me the SECRET",
      })),
      403,
    );
    // An unknown role beside a known one changes nothing.
    const extra = await provider.sign(claims("erin", ["reader", "owner"]));
    assert.equal(await statusOf(chat(stack, extra)), 200);
    assert.equal(
      await statusOf(chat(stack, extra, { model: "qwen2.5:7b" })),
      403,
    );

    assert.deepEqual(refusalReasons(stack), [
      "model_denied",
      "prompt_rejected",
      "model_denied",
    ]);
    assert.deepEqual(
      forwarded(stack).map((record) => record.acted?.models[0]),
      [
        "registry.ollama.ai/library/llama3.2:latest",
        "registry.ollama.ai/library/qwen2.5:7b",
        "registry.ollama.ai/library/llama3.2:latest",
      ],
    );
  });
});

Deno.test("user_overrides replace role policy for one person", async () => {
  await withStack(async (stack, provider) => {
    const carol = await provider.sign(claims("carol", ["reader", "coder"]));
    assert.equal(await statusOf(chat(stack, carol)), 403);
    assert.equal(
      await statusOf(chat(stack, carol, { model: "qwen2.5:7b" })),
      403,
    );
    const embed = await fetch(`${stack.url}/api/embed`, {
      method: "POST",
      headers: bearer(carol),
      body: JSON.stringify({ model: "nomic-embed-text", input: "hi" }),
    });
    assert.equal(embed.status, 200);
    await embed.body?.cancel();
    // The override applies even with no role at all.
    const roleless = await provider.sign(claims("carol"));
    const again = await fetch(`${stack.url}/api/embed`, {
      method: "POST",
      headers: bearer(roleless),
      body: JSON.stringify({ model: "nomic-embed-text", input: "hi" }),
    });
    assert.equal(again.status, 200);
    await again.body?.cancel();
    assert.equal(forwarded(stack).length, 2);
  });
});

Deno.test("a role's rate limit counts per person", async () => {
  await withStack(async (stack, provider) => {
    const frank = await provider.sign(claims("frank", ["limited"]));
    const grace = await provider.sign(claims("grace", ["limited"]));
    assert.equal(await statusOf(chat(stack, frank)), 200);
    assert.equal(await statusOf(chat(stack, frank)), 200);
    assert.equal(await statusOf(chat(stack, frank)), 429);
    // The same role for someone else: a counter of their own.
    assert.equal(await statusOf(chat(stack, grace)), 200);
    assert.equal(forwarded(stack).length, 3);
  });
});

Deno.test("provider down at start: Butler serves keys, refuses tokens clearly, recovers", async () => {
  await withStack(async (stack, provider) => {
    assert.equal((await health(stack)).oidc, "discovering");
    const token = await provider.sign(claims("dave", ["reader"]));

    const refused = await chat(stack, token);
    assert.equal(refused.status, 401);
    assert.match(
      (await refused.json()).error,
      /identity provider keys are not available yet/,
    );
    assert.deepEqual(refusalReasons(stack), ["oidc_unavailable"]);
    assert.equal(await statusOf(chat(stack, KEYS.app)), 200);
    assert.equal(forwarded(stack).length, 1);

    provider.setDown(false);
    await waitForOidc(stack, "ready");
    assert.equal(await statusOf(chat(stack, token)), 200);
    assert.equal(forwarded(stack).at(-1)?.headers["x-butler-user"], "dave");
  }, {
    providerDown: true,
    oidc: { initialBackoffMs: 20, maxBackoffMs: 100 },
  });
});

Deno.test("a discovery document naming another issuer: /healthz says failed", async () => {
  await withStack(async (stack, provider) => {
    await waitForOidc(stack, "failed");
    const token = await provider.sign(claims("dave", ["reader"]));
    assert.equal(await statusOf(chat(stack, token)), 401);
    assert.equal(await statusOf(chat(stack, KEYS.app)), 200);
    assert.equal(forwarded(stack).length, 1);
  }, {
    issuer: (provider) => provider.issuer.replace("/realms/test", "/realms/x"),
    oidc: { initialBackoffMs: 20, maxBackoffMs: 100 },
  });
});

Deno.test("key rotation: a token with the new kid is accepted after a refetch", async () => {
  await withStack(async (stack, provider) => {
    const before = await provider.sign(claims("dave", ["reader"]));
    assert.equal(await statusOf(chat(stack, before)), 200);
    const fetches = provider.requests.filter((p) => p.endsWith("/certs"));

    await provider.rotate();
    const after = await provider.sign(claims("dave", ["reader"]));
    assert.equal(await statusOf(chat(stack, after)), 200);
    const refetched = provider.requests.filter((p) => p.endsWith("/certs"));
    assert.equal(refetched.length, fetches.length + 1);
    // Tokens signed with the previous key stay valid while it is published.
    assert.equal(await statusOf(chat(stack, before)), 200);
    assert.equal(forwarded(stack).length, 3);
  }, { oidc: { keyRefetchCooldownMs: 0 } });
});

Deno.test("a reload with the provider down keeps the keys already held", async () => {
  await withStack(async (stack, provider) => {
    const token = await provider.sign(claims("dave", ["reader"]));
    assert.equal(await statusOf(chat(stack, token)), 200);

    provider.setDown(true);
    assert.equal(await stack.butler.reload(), true);
    assert.equal((await health(stack)).oidc, "ready");
    assert.equal(await statusOf(chat(stack, token)), 200);
    assert.equal(forwarded(stack).length, 2);
  });
});

Deno.test("permissions name the issuer's host for OIDC configs", async () => {
  for (
    const [issuer, host] of [
      ["http://127.0.0.1:8180/realms/test", "127.0.0.1:8180"],
      ["https://id.example.com/realms/home", "id.example.com:443"],
      ["https://login.example.org:8443", "login.example.org:8443"],
    ]
  ) {
    const path = await writeConfig(
      configFor(issuer).replace("{{UPSTREAM}}", "http://127.0.0.1:11434"),
    );
    const required = requiredPermissions(await loadPolicy(path));
    assert.ok(required.net.includes(host), `${host} in ${required.net}`);
    assert.ok(required.net.includes("127.0.0.1:11434"));
    assert.equal(required.net.length, 3, `${required.net}`);
  }
});
