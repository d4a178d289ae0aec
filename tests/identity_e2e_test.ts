/**
 * Services acting for people, end to end: a client with
 * `require_user_auth` sends its key and a person's token, the request must
 * pass both policies, Ollama learns who it serves from Butler's identity
 * headers (never from the client's), and rate limits and concurrency count
 * per person across every client acting for them.
 */

import assert from "node:assert/strict";
import { hashPassword } from "../src/auth/password.ts";
import { bearer, KEYS, type Stack, startStack } from "./support/harness.ts";

const PASSWORDS = {
  alice: "alice-correct-horse",
  bob: "bob-battery-staple",
  carol: "carol-tr0ub4dor-3",
};
type Name = keyof typeof PASSWORDS;
const HASHES = {
  alice: await hashPassword(PASSWORDS.alice, 4),
  bob: await hashPassword(PASSWORDS.bob, 4),
  carol: await hashPassword(PASSWORDS.carol, 4),
};

// `app` and `admin` act for people; `limited` is a service on its own.
const CONFIG = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
auth:
  mode: either
  jwt_secret: identity-e2e-secret-0123456789abcdef
clients:
  - name: app
    key: ${KEYS.app}
    require_user_auth: true
    allow_models: ["llama3.2", "qwen2.5"]
  - name: admin
    key: ${KEYS.admin}
    require_user_auth: true
    allow_models: ["*"]
  - name: limited
    key: ${KEYS.limited}
    allow_models: ["*"]
users:
  - name: alice
    password_hash: "${HASHES.alice}"
    allow_models: ["llama3.2", "nomic-embed-text"]
    rate_limit: 3/min
  - name: bob
    password_hash: "${HASHES.bob}"
    allow_models: ["*"]
    max_concurrent: 1
  - name: carol
    password_hash: "${HASHES.carol}"
    allow_models: ["llama3.2", "nomic-embed-text"]
`;

const USER_TOKEN = "x-butler-user-token";

async function withStack(
  fn: (stack: Stack, tokens: Record<Name, string>) => Promise<void>,
  options: Parameters<typeof startStack>[1] = {},
): Promise<void> {
  const stack = await startStack(CONFIG, options);
  try {
    const tokens = {
      alice: await tokenFor(stack, "alice"),
      bob: await tokenFor(stack, "bob"),
      carol: await tokenFor(stack, "carol"),
    };
    await fn(stack, tokens);
  } finally {
    await stack.close();
  }
}

async function tokenFor(stack: Stack, name: Name): Promise<string> {
  const response = await fetch(`${stack.url}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: name, password: PASSWORDS[name] }),
  });
  assert.equal(response.status, 200);
  return (await response.json()).token;
}

function generate(
  stack: Stack,
  model: string,
  headers: Record<string, string>,
  options: { stream?: boolean } = {},
): Promise<Response> {
  return fetch(`${stack.url}/api/generate`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({
      model,
      prompt: "hello",
      stream: options.stream ?? false,
    }),
  });
}

async function statusOf(response: Promise<Response>): Promise<number> {
  const answered = await response;
  await answered.body?.cancel();
  return answered.status;
}

function refusals(stack: Stack): Record<string, unknown>[] {
  return stack.logs.filter((line) => line.msg === "refused");
}

Deno.test("a client that acts for people needs its key and a user token", async () => {
  await withStack(async (stack, tokens) => {
    const missing = await generate(stack, "llama3.2", bearer(KEYS.app));
    assert.equal(missing.status, 401);
    assert.match((await missing.json()).error, /x-butler-user-token/);

    const garbage = await statusOf(
      generate(stack, "llama3.2", {
        ...bearer(KEYS.app),
        [USER_TOKEN]: "not-a-token",
      }),
    );
    assert.equal(garbage, 401);
    const forged = tokens.alice.slice(0, -4) +
      (tokens.alice.endsWith("AAAA") ? "BBBB" : "AAAA");
    const badSignature = await statusOf(
      generate(stack, "llama3.2", {
        ...bearer(KEYS.app),
        [USER_TOKEN]: forged,
      }),
    );
    assert.equal(badSignature, 401);
    assert.deepEqual(refusals(stack).map((line) => line.reason), [
      "user_token_missing",
      "malformed_token",
      "token_signature_invalid",
    ]);

    const both = await statusOf(
      generate(stack, "llama3.2", {
        ...bearer(KEYS.app),
        [USER_TOKEN]: tokens.alice,
      }),
    );
    assert.equal(both, 200);
    assert.equal(stack.sim.records.length, 1);
    const headers = stack.sim.records[0].headers;
    assert.equal(headers["x-butler-client"], "app");
    assert.equal(headers["x-butler-user"], "alice");
    assert.equal(headers[USER_TOKEN], undefined);
    assert.equal(headers["authorization"], undefined);
  });
});

Deno.test("a request for a person must pass the client's and the person's policy", async () => {
  await withStack(async (stack, tokens) => {
    const forCarol = { ...bearer(KEYS.app), [USER_TOKEN]: tokens.carol };
    // The client allows qwen2.5, carol does not: the message says whose
    // policy refused it.
    const userSaysNo = await generate(stack, "qwen2.5", forCarol);
    assert.equal(userSaysNo.status, 403);
    assert.match(
      (await userSaysNo.json()).error,
      /^model 'qwen2\.5:latest' is not allowed for this user$/,
    );
    // Carol allows nomic-embed-text, the client does not.
    const clientSaysNo = await generate(stack, "nomic-embed-text", forCarol);
    assert.equal(clientSaysNo.status, 403);
    assert.match(
      (await clientSaysNo.json()).error,
      /is not allowed for this client$/,
    );
    assert.equal(stack.sim.records.length, 0);
    // Both allow llama3.2.
    assert.equal(await statusOf(generate(stack, "llama3.2", forCarol)), 200);
    // Carol on her own may use what her policy allows.
    assert.equal(
      await statusOf(
        generate(stack, "nomic-embed-text", bearer(tokens.carol)),
      ),
      200,
    );
    assert.equal(stack.sim.records.length, 2);

    const denied = refusals(stack);
    assert.deepEqual(denied.map((line) => line.reason), [
      "model_denied",
      "model_denied",
    ]);
    for (const line of denied) {
      assert.equal(line.client, "app");
      assert.equal(line.user, "carol");
      assert.equal(line.auth, "jwt");
    }
  });
});

Deno.test("identity headers upstream come from Butler, never from the client", async () => {
  await withStack(async (stack, tokens) => {
    const claimed = {
      "x-butler-user": "mallory",
      "x-butler-client": "admin",
    };
    const cases: [
      Record<string, string>,
      string | undefined,
      string | undefined,
    ][] = [
      [
        { ...bearer(KEYS.app), [USER_TOKEN]: tokens.alice, ...claimed },
        "app",
        "alice",
      ],
      [{ ...bearer(KEYS.limited), ...claimed }, "limited", undefined],
      [{ ...bearer(tokens.bob), ...claimed }, undefined, "bob"],
      // A client that does not act for people: a user token it sends
      // identifies no one.
      [
        { ...bearer(KEYS.limited), [USER_TOKEN]: tokens.alice },
        "limited",
        undefined,
      ],
    ];
    for (const [headers] of cases) {
      assert.equal(await statusOf(generate(stack, "llama3.2", headers)), 200);
    }

    assert.equal(stack.sim.records.length, cases.length);
    cases.forEach(([, client, user], index) => {
      const seen = stack.sim.records[index].headers;
      assert.equal(seen["x-butler-client"], client, `case ${index}`);
      assert.equal(seen["x-butler-user"], user, `case ${index}`);
      assert.equal(seen[USER_TOKEN], undefined, `case ${index}`);
    });
  });
});

Deno.test("log lines and metrics carry client, user and auth", async () => {
  await withStack(async (stack, tokens) => {
    const calls: Record<string, string>[] = [
      { ...bearer(KEYS.app), [USER_TOKEN]: tokens.alice },
      bearer(KEYS.limited),
      bearer(tokens.bob),
    ];
    for (const headers of calls) {
      assert.equal(await statusOf(generate(stack, "llama3.2", headers)), 200);
    }
    assert.equal(
      await statusOf(
        generate(stack, "qwen2.5", {
          ...bearer(KEYS.app),
          [USER_TOKEN]: tokens.alice,
        }),
      ),
      403,
    );

    const responses = stack.logs.filter((line) => line.msg === "response");
    assert.deepEqual(
      responses.map((line) => [line.client, line.user, line.auth]),
      [
        ["app", "alice", "jwt"],
        ["limited", undefined, "api_key"],
        [undefined, "bob", "jwt"],
      ],
    );
    const [denied] = refusals(stack);
    assert.deepEqual(
      [denied.client, denied.user, denied.auth, denied.reason],
      ["app", "alice", "jwt", "model_denied"],
    );

    const metrics = await (await fetch(`${stack.url}/metrics`)).text();
    const requests = metrics.split("\n").filter((line) =>
      line.startsWith("butler_requests_total{")
    );
    for (
      const labels of [
        'client="app",user="alice",auth="jwt"',
        'client="limited",user="-",auth="api_key"',
        'client="-",user="bob",auth="jwt"',
      ]
    ) {
      assert.ok(
        requests.some((line) => line.includes(labels)),
        `${labels} in\n${requests.join("\n")}`,
      );
    }
    assert.match(
      metrics,
      /butler_refusals_total\{client="app",user="alice",auth="jwt",reason="model_denied"\} 1/,
    );
  });
});

Deno.test("a person's rate limit counts across every client acting for them", async () => {
  await withStack(async (stack, tokens) => {
    const viaApp = { ...bearer(KEYS.app), [USER_TOKEN]: tokens.alice };
    const viaAdmin = { ...bearer(KEYS.admin), [USER_TOKEN]: tokens.alice };
    // alice: 3/min. Neither client has a limit of its own.
    assert.equal(await statusOf(generate(stack, "llama3.2", viaApp)), 200);
    assert.equal(await statusOf(generate(stack, "llama3.2", viaAdmin)), 200);
    assert.equal(await statusOf(generate(stack, "llama3.2", viaApp)), 200);

    const limited = await generate(stack, "llama3.2", viaAdmin);
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers.get("retry-after")) > 0);
    await limited.body?.cancel();
    assert.equal(
      await statusOf(generate(stack, "llama3.2", bearer(tokens.alice))),
      429,
    );

    // Another person through the same clients is not affected.
    const bobViaAdmin = { ...bearer(KEYS.admin), [USER_TOKEN]: tokens.bob };
    assert.equal(await statusOf(generate(stack, "llama3.2", bobViaAdmin)), 200);
    assert.equal(stack.sim.records.length, 4);
    assert.deepEqual(
      refusals(stack).map((line) => [line.reason, line.user]),
      [["rate_limited", "alice"], ["rate_limited", "alice"]],
    );
  });
});

Deno.test("a person's concurrency limit counts across every client acting for them", async () => {
  await withStack(async (stack, tokens) => {
    const viaApp = { ...bearer(KEYS.app), [USER_TOKEN]: tokens.bob };
    const viaAdmin = { ...bearer(KEYS.admin), [USER_TOKEN]: tokens.bob };
    // bob: max_concurrent 1. The first stream holds his slot until it ends.
    const first = await generate(stack, "llama3.2", viaApp, { stream: true });
    assert.equal(first.status, 200);

    const second = await generate(stack, "llama3.2", viaAdmin);
    assert.equal(second.status, 429);
    await second.body?.cancel();
    const aliceMeanwhile = {
      ...bearer(KEYS.admin),
      [USER_TOKEN]: tokens.alice,
    };
    assert.equal(
      await statusOf(generate(stack, "llama3.2", aliceMeanwhile)),
      200,
    );

    await first.text();
    assert.equal(await statusOf(generate(stack, "llama3.2", viaAdmin)), 200);
    assert.equal(stack.sim.records.length, 3);
    assert.deepEqual(
      refusals(stack).map((line) => [line.reason, line.client, line.user]),
      [["too_many_concurrent", "admin", "bob"]],
    );
  }, { sim: { chunkDelayMs: 100 } });
});
