/**
 * Users listed in the config, end to end: `POST /auth/login` on a real
 * Butler, then the token it issued on an Ollama route. The simulator's
 * record proves what reached Ollama and for whom; a refused request leaves
 * no record.
 */

import assert from "node:assert/strict";
import { hashPassword } from "../src/auth/password.ts";
import { issueUserToken } from "../src/auth/jwt_local.ts";
import { MAX_LOGIN_BODY_BYTES } from "../src/auth/login.ts";
import { bearer, KEYS, type Stack, withStackFor } from "./support/harness.ts";

const SECRET = "login-e2e-secret-0123456789abcdef";
const PASSWORDS = { alice: "alice-correct-horse", bob: "bob-battery-staple" };

// Cost 4: the lowest bcrypt allows, so the tests stay fast.
const HASHES = {
  alice: await hashPassword(PASSWORDS.alice, 4),
  bob: await hashPassword(PASSWORDS.bob, 4),
};

function userEntry(name: "alice" | "bob"): string {
  return `
  - name: ${name}
    password_hash: "${HASHES[name]}"
    allow_models: ["llama3.2"]`;
}

function configWith(users: ("alice" | "bob")[]): string {
  return `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
auth:
  mode: jwt_standalone
  jwt_secret: ${SECRET}
  token_expiry: 1h
users:${users.map(userEntry).join("")}
`;
}

function login(
  stack: Stack,
  body: unknown,
  init: RequestInit = {},
): Promise<Response> {
  return fetch(`${stack.url}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });
}

async function tokenFor(stack: Stack, name: "alice" | "bob"): Promise<string> {
  const response = await login(stack, {
    username: name,
    password: PASSWORDS[name],
  });
  assert.equal(response.status, 200);
  return (await response.json()).token;
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

Deno.test("a login's token is accepted on /api/chat and names the user upstream", async () => {
  await withStackFor(configWith(["alice", "bob"]), async (stack) => {
    const before = Date.now();
    const response = await login(stack, {
      username: "alice",
      password: PASSWORDS.alice,
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("cache-control"), "no-store");
    const body = await response.json();
    assert.deepEqual(Object.keys(body).sort(), ["expires_at", "token"]);
    const expiresAt = Date.parse(body.expires_at);
    assert.ok(expiresAt >= before + 3_600_000 - 2_000, body.expires_at);
    assert.ok(expiresAt <= Date.now() + 3_600_000 + 2_000, body.expires_at);

    const answer = await chat(stack, body.token);
    assert.equal(answer.status, 200);
    assert.equal((await answer.json()).done, true);

    assert.equal(stack.sim.records.length, 1);
    const headers = stack.sim.records[0].headers;
    assert.equal(headers["x-butler-user"], "alice");
    assert.equal(headers["x-butler-client"], undefined);
    assert.equal(headers["authorization"], undefined);
    const signedIn = stack.logs.find((line) => line.msg === "login");
    assert.equal(signedIn?.user, "alice");
    const logged = stack.logs.find((line) => line.msg === "response");
    assert.equal(logged?.user, "alice");
    assert.equal(logged?.auth, "jwt");
    const everything = JSON.stringify(stack.logs);
    assert.ok(!everything.includes(body.token), "the token is never logged");
    assert.ok(!everything.includes(PASSWORDS.alice), "nor the password");
  });
});

Deno.test("wrong password and unknown user get the same 401", async () => {
  await withStackFor(configWith(["alice"]), async (stack) => {
    const wrong = await login(stack, { username: "alice", password: "nope" });
    const unknown = await login(stack, {
      username: "mallory",
      password: PASSWORDS.alice,
    });
    assert.equal(wrong.status, 401);
    assert.equal(unknown.status, 401);
    const wrongBody = await wrong.text();
    assert.equal(await unknown.text(), wrongBody);
    assert.deepEqual(JSON.parse(wrongBody), { error: "invalid credentials" });
    assert.equal(
      wrong.headers.get("content-type"),
      unknown.headers.get("content-type"),
    );
    assert.deepEqual(refusalReasons(stack), [
      "invalid_credentials",
      "invalid_credentials",
    ]);
    // A failed attempt's username may be a mistyped password: never logged.
    assert.ok(!JSON.stringify(stack.logs).includes("mallory"));
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("failed logins are throttled per username with 429 and Retry-After", async () => {
  await withStackFor(configWith(["alice", "bob"]), async (stack) => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const response = await login(stack, {
        username: "bob",
        password: `guess-${attempt}`,
      });
      assert.equal(response.status, 401, `attempt ${attempt}`);
      await response.body?.cancel();
    }

    // Locked for the window, even with the right password.
    const locked = await login(stack, {
      username: "bob",
      password: PASSWORDS.bob,
    });
    assert.equal(locked.status, 429);
    const retryAfter = Number(locked.headers.get("retry-after"));
    assert.ok(Number.isInteger(retryAfter) && retryAfter > 0, `${retryAfter}`);
    assert.match((await locked.json()).error, /too many login attempts/);
    assert.equal(refusalReasons(stack).at(-1), "login_throttled");

    // Another person on the same address is not locked out by bob's count.
    const alice = await login(stack, {
      username: "alice",
      password: PASSWORDS.alice,
    });
    assert.equal(alice.status, 200);
    await alice.body?.cancel();
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("failed logins are throttled per client address across usernames", async () => {
  await withStackFor(configWith(["alice"]), async (stack) => {
    // 20 failures from one address, each on a fresh username (below the
    // per-username limit), lock the address.
    for (let attempt = 0; attempt < 20; attempt++) {
      const response = await login(stack, {
        username: `someone-${attempt}`,
        password: "guess",
      });
      assert.equal(response.status, 401, `attempt ${attempt}`);
      await response.body?.cancel();
    }
    const locked = await login(stack, {
      username: "alice",
      password: PASSWORDS.alice,
    });
    assert.equal(locked.status, 429);
    assert.ok(Number(locked.headers.get("retry-after")) > 0);
    await locked.body?.cancel();
  });
});

Deno.test("a token stops working once its user is removed from the config", async () => {
  await withStackFor(configWith(["alice", "bob"]), async (stack) => {
    const alice = await tokenFor(stack, "alice");
    const bob = await tokenFor(stack, "bob");
    const first = await chat(stack, alice);
    assert.equal(first.status, 200);
    await first.body?.cancel();

    const config = await Deno.readTextFile(stack.configPath);
    const withoutAlice = configWith(["bob"]).replace(
      "{{UPSTREAM}}",
      stack.sim.url,
    );
    assert.notEqual(withoutAlice, config);
    await Deno.writeTextFile(stack.configPath, withoutAlice);
    assert.equal(await stack.butler.reload(), true);

    const refused = await chat(stack, alice);
    assert.equal(refused.status, 401);
    await refused.body?.cancel();
    assert.ok(refusalReasons(stack).includes("token_user_unknown"));
    const still = await chat(stack, bob);
    assert.equal(still.status, 200);
    await still.body?.cancel();

    assert.equal(stack.sim.records.length, 2);
    assert.deepEqual(
      stack.sim.records.map((record) => record.headers["x-butler-user"]),
      ["alice", "bob"],
    );
  });
});

Deno.test("an expired token and a token signed with another secret are 401", async () => {
  await withStackFor(configWith(["alice"]), async (stack) => {
    // Issued by this Butler's secret two hours ago, valid for one hour.
    const expired = await issueUserToken("alice", {
      secret: new TextEncoder().encode(SECRET),
      expiryMs: 3_600_000,
      now: Date.now() - 7_200_000,
    });
    const forged = await issueUserToken("alice", {
      secret: new TextEncoder().encode("another-secret-0123456789abcdefgh"),
      expiryMs: 3_600_000,
    });
    for (const token of [expired.token, forged.token]) {
      const response = await chat(stack, token);
      assert.equal(response.status, 401);
      assert.match(response.headers.get("www-authenticate") ?? "", /Bearer/);
      await response.body?.cancel();
    }
    assert.deepEqual(refusalReasons(stack), [
      "token_expired",
      "token_signature_invalid",
    ]);
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("the login route is bounded and strict about its body", async () => {
  await withStackFor(configWith(["alice"]), async (stack) => {
    const padding = "x".repeat(MAX_LOGIN_BODY_BYTES);
    const declared = await login(stack, {
      username: "alice",
      password: padding,
    });
    assert.equal(declared.status, 413);
    await declared.body?.cancel();

    // Without a Content-Length: the limit holds while reading the stream.
    const chunks = [
      '{"username":"alice","password":"',
      padding,
      '"}',
    ];
    const streamed = await login(stack, undefined, {
      body: ReadableStream.from(chunks).pipeThrough(new TextEncoderStream()),
    });
    assert.equal(streamed.status, 413);
    await streamed.body?.cancel();

    const notJson = await login(stack, "username=alice");
    assert.equal(notJson.status, 400);
    await notJson.body?.cancel();
    const noPassword = await login(stack, { username: "alice" });
    assert.equal(noPassword.status, 400);
    assert.match((await noPassword.json()).error, /^password: /);

    const get = await fetch(`${stack.url}/auth/login`);
    assert.equal(get.status, 404);
    await get.body?.cancel();
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("the login route does not exist in api_key mode", async () => {
  const config = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["*"]
`;
  await withStackFor(config, async (stack) => {
    const response = await login(stack, {
      username: "alice",
      password: PASSWORDS.alice,
    });
    assert.equal(response.status, 404);
    await response.body?.cancel();
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("a web page cannot post logins: JSON only, and browser origins must be listed", async () => {
  await withStackFor(configWith(["alice"]), async (stack) => {
    const attempts: [Record<string, string>, number][] = [
      // A browser sends these without asking first.
      [{ "content-type": "text/plain" }, 415],
      [{ "content-type": "application/x-www-form-urlencoded" }, 415],
      // With JSON the browser asks first; an unlisted origin is refused anyway.
      [
        { "content-type": "application/json", origin: "http://evil.example" },
        403,
      ],
    ];
    for (const [headers, status] of attempts) {
      const response = await login(stack, {
        username: "alice",
        password: "wrong",
      }, { headers });
      assert.equal(response.status, status, JSON.stringify(headers));
      await response.body?.cancel();
    }
    // None of them counted as a failed login: the right password still works
    // after more refused attempts than the throttle allows.
    for (let i = 0; i < 6; i++) {
      const response = await login(
        stack,
        { username: "alice", password: "x" },
        {
          headers: { "content-type": "text/plain" },
        },
      );
      await response.body?.cancel();
    }
    const ok = await login(stack, {
      username: "alice",
      password: PASSWORDS.alice,
    });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    // Each refusal is logged and counted with its reason, without a name.
    const reasons = stack.logs.filter((line) => line.msg === "refused")
      .map((line) => line.reason);
    assert.deepEqual(reasons.slice(0, 3), [
      "login_not_json",
      "login_not_json",
      "login_origin_not_allowed",
    ]);
    assert.ok(
      stack.logs.every((line) => line.msg !== "refused" || !("user" in line)),
    );
  });
});
