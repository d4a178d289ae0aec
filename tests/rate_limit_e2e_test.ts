/**
 * Rate limits over real sockets: `rate_limit` per client and
 * `global_rate_limit`, refused with 429 in the route's dialect, whole-second
 * `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` headers, before
 * the body is read and without reaching Ollama. One test runs in real time.
 */

import assert from "node:assert/strict";
import { bearer, KEYS, type Stack, withStackFor } from "./support/harness.ts";

function generate(stack: Stack, key: string) {
  return fetch(stack.url + "/api/generate", {
    method: "POST",
    headers: bearer(key),
    body: JSON.stringify({ model: "llama3.2", prompt: "hi", stream: false }),
  });
}

const RATE_LIMIT_FIELD = /^"[^"]+";r=(\d+);t=(\d+)$/;

/** One client, `app`, allowed llama3.2 at `rate`. */
function appLimitedTo(rate: string): string {
  return `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2"]
    rate_limit: ${rate}
`;
}

Deno.test("real time: 2/sec lets two through, refuses the third, then lets one through again", async () => {
  await withStackFor(appLimitedTo("2/sec"), async (stack) => {
    for (const remaining of ["1", "0"]) {
      const response = await generate(stack, KEYS.app);
      assert.equal(response.status, 200);
      await response.body?.cancel();
      assert.match(response.headers.get("ratelimit-policy")!, /;q=2;w=1$/);
      const state = RATE_LIMIT_FIELD.exec(response.headers.get("ratelimit")!);
      assert.equal(state?.[1], remaining);
      assert.equal(response.headers.get("retry-after"), null);
    }

    const refused = await generate(stack, KEYS.app);
    assert.equal(refused.status, 429);
    assert.match((await refused.json()).error, /rate limit/);
    const retryAfter = refused.headers.get("retry-after");
    assert.match(retryAfter!, /^[1-9][0-9]*$/);
    assert.match(refused.headers.get("ratelimit-policy")!, /;q=2;w=1$/);
    const state = RATE_LIMIT_FIELD.exec(refused.headers.get("ratelimit")!);
    assert.equal(state?.[1], "0");
    assert.equal(state?.[2], retryAfter);
    assert.equal(stack.sim.records.length, 2);

    // Waiting as long as Retry-After says is enough.
    await new Promise((resolve) =>
      setTimeout(resolve, Number(retryAfter) * 1000)
    );
    const again = await generate(stack, KEYS.app);
    assert.equal(again.status, 200);
    await again.body?.cancel();
    assert.equal(stack.sim.records.length, 3);
  });
});

Deno.test("a refusal is a 429 in the route's dialect, decided before the body", async (t) => {
  const config = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2"]
    rate_limit: 1/hour
`;
  await withStackFor(config, async (stack) => {
    const first = await fetch(stack.url + "/api/tags", {
      headers: bearer(KEYS.app),
    });
    assert.equal(first.status, 200);
    await first.body?.cancel();
    // Listings carry the state too.
    assert.match(first.headers.get("ratelimit")!, RATE_LIMIT_FIELD);
    assert.match(first.headers.get("ratelimit-policy")!, /;q=1;w=3600$/);

    // deno-lint-ignore no-explicit-any
    const cases: [string, (body: any) => unknown][] = [
      ["/api/chat", (body) => body.error],
      ["/v1/chat/completions", (body) => {
        assert.equal(body.error.type, "rate_limit_error");
        return body.error.message;
      }],
      ["/v1/messages", (body) => {
        assert.equal(body.type, "error");
        assert.equal(body.error.type, "rate_limit_error");
        return body.error.message;
      }],
    ];
    for (const [path, message] of cases) {
      await t.step(path, async () => {
        const response = await fetch(stack.url + path, {
          method: "POST",
          headers: bearer(KEYS.app),
          body: JSON.stringify({ model: "llama3.2", messages: [] }),
        });
        assert.equal(response.status, 429);
        assert.match(String(message(await response.json())), /rate limit/);
        const retryAfter = Number(response.headers.get("retry-after"));
        assert.ok(Number.isInteger(retryAfter));
        assert.ok(retryAfter > 3500 && retryAfter <= 3600, String(retryAfter));
        assert.match(response.headers.get("ratelimit-policy")!, /;q=1;w=3600$/);
      });
    }

    await t.step("headers only, body never sent", async () => {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: Number(new URL(stack.url).port),
      });
      try {
        await conn.write(new TextEncoder().encode(
          `POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEYS.app}\r\n` +
            `Content-Length: 100000000\r\n\r\n`,
        ));
        const buffer = new Uint8Array(4096);
        const deadline = setTimeout(() => conn.close(), 5_000);
        const n = await conn.read(buffer).finally(() => clearTimeout(deadline));
        const head = new TextDecoder().decode(buffer.subarray(0, n ?? 0));
        assert.match(head, /^HTTP\/1\.1 429/);
        assert.match(head, /\r\nretry-after: \d+\r\n/i);
      } finally {
        try {
          conn.close();
        } catch {
          // closed by the deadline
        }
      }
    });
    // Only the listing reached Ollama.
    assert.deepEqual(stack.sim.records.map((r) => r.path), ["/api/tags"]);
  });
});

Deno.test("global_rate_limit counts every client together; per-client limits stay apart", async () => {
  const config = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
global_rate_limit: 3/min
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2"]
    rate_limit: 2/min
  - name: other
    key: ${KEYS.limited}
    allow_models: ["llama3.2"]
`;
  await withStackFor(config, async (stack) => {
    const statuses: number[] = [];
    const policies: string[] = [];
    for (const key of [KEYS.app, KEYS.app, KEYS.app, KEYS.limited]) {
      const response = await generate(stack, key);
      statuses.push(response.status);
      policies.push(response.headers.get("ratelimit-policy")!);
      await response.body?.cancel();
    }
    // app's third is over its own 2/min; other's first still fits globally.
    assert.deepEqual(statuses, [200, 200, 429, 200]);
    // Each policy keeps its name: the client's own, or the global one.
    assert.deepEqual(policies, [
      '"client";q=2;w=60',
      '"client";q=2;w=60',
      '"client";q=2;w=60',
      '"global";q=3;w=60',
    ]);

    const overGlobal = await generate(stack, KEYS.limited);
    assert.equal(overGlobal.status, 429);
    await overGlobal.body?.cancel();
    assert.match(overGlobal.headers.get("retry-after")!, /^\d+$/);
    assert.equal(
      overGlobal.headers.get("ratelimit-policy"),
      '"global";q=3;w=60',
    );
    assert.equal(stack.sim.records.length, 3);
  });
});

Deno.test("refusals after the rate check carry the RateLimit headers too", async () => {
  await withStackFor(appLimitedTo("10/min"), async (stack) => {
    const denied = await fetch(stack.url + "/api/generate", {
      method: "POST",
      headers: bearer(KEYS.app),
      body: JSON.stringify({ model: "qwen2.5", prompt: "hi" }),
    });
    assert.equal(denied.status, 403);
    await denied.body?.cancel();
    assert.equal(denied.headers.get("ratelimit-policy"), '"client";q=10;w=60');
    // The refused request counted: nine left.
    assert.equal(
      RATE_LIMIT_FIELD.exec(denied.headers.get("ratelimit")!)?.[1],
      "9",
    );
    assert.equal(denied.headers.get("retry-after"), null);
    assert.equal(
      stack.sim.records.length,
      0,
      "a refused request reached Ollama",
    );
  });
});
