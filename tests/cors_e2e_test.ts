/**
 * CORS over real sockets: preflights answered by Butler for listed origins
 * (without credentials, never forwarded), CORS headers on every response to
 * a listed origin, refusals included, and none at all for other origins.
 * The simulator's records prove what reached Ollama.
 */

import assert from "node:assert/strict";
// Dev-only clients, pinned here rather than in deno.json's imports.
// deno-lint-ignore no-import-prefix
import OpenAI from "npm:openai@7.55.0";
// deno-lint-ignore no-import-prefix
import Anthropic from "npm:@anthropic-ai/sdk@1.10.0";
// deno-lint-ignore no-import-prefix
import { Ollama } from "npm:ollama@0.6.4/browser";
import { bearer, KEYS, type Stack, withStackFor } from "./support/harness.ts";
import {
  CORS_ALLOW_HEADERS,
  CORS_ALLOW_METHODS,
  PREFLIGHT_MAX_AGE_SECONDS,
} from "../src/routes/cors.ts";

const APP_ORIGIN = "http://127.0.0.1:5173";
const OTHER_ORIGIN = "http://localhost:5173";

const CONFIG = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
cors:
  allow_origins:
    - ${APP_ORIGIN}
    - https://chat.example.com
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2"]
  - name: limited
    key: ${KEYS.limited}
    allow_models: ["llama3.2"]
    rate_limit: 1/min
`;

function withStack(
  fn: (stack: Stack) => Promise<void>,
  config = CONFIG,
) {
  return withStackFor(config, fn);
}

function preflight(
  stack: Stack,
  path: string,
  headers: Record<string, string>,
) {
  return fetch(stack.url + path, { method: "OPTIONS", headers });
}

function corsHeaderNames(response: Response): string[] {
  return [...response.headers.keys()].filter((name) =>
    name.startsWith("access-control-")
  );
}

function chat(
  stack: Stack,
  headers: Record<string, string>,
  body: unknown = {
    model: "llama3.2",
    messages: [{ role: "user", content: "hello" }],
  },
) {
  return fetch(stack.url + "/api/chat", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

Deno.test("preflight: a listed origin is answered by Butler without credentials", async () => {
  await withStack(async (stack) => {
    const response = await preflight(stack, "/v1/chat/completions", {
      origin: APP_ORIGIN,
      "access-control-request-method": "POST",
      "access-control-request-headers": "authorization,content-type",
    });
    assert.equal(response.status, 204);
    assert.equal(await response.text(), "");
    const headers = response.headers;
    assert.equal(headers.get("access-control-allow-origin"), APP_ORIGIN);
    assert.equal(headers.get("vary"), "Origin");
    assert.deepEqual(
      headers.get("access-control-allow-methods")!.split(", "),
      ["GET", "HEAD", "POST", "DELETE"],
    );
    const allowed = headers.get("access-control-allow-headers")!.split(", ");
    for (
      const name of [
        "authorization",
        "content-type",
        "x-api-key",
        "x-butler-user-token",
        "anthropic-version",
        "anthropic-beta",
        "anthropic-dangerous-direct-browser-access",
        "openai-organization",
        "openai-project",
        "x-stainless-os",
        "x-stainless-lang",
        "x-stainless-package-version",
        "x-stainless-runtime",
        "x-stainless-runtime-version",
        "x-stainless-arch",
        "x-stainless-retry-count",
        "x-stainless-timeout",
        "x-stainless-helper-method",
      ]
    ) {
      assert.ok(allowed.includes(name), name);
    }
    assert.equal(
      headers.get("access-control-max-age"),
      String(PREFLIGHT_MAX_AGE_SECONDS),
    );
    assert.equal(headers.get("access-control-allow-credentials"), null);
    assert.equal(stack.sim.records.length, 0, "a preflight is never forwarded");
    assert.ok(!stack.logs.some((line) => line.msg === "refused"));
  });
});

Deno.test("preflight: an unlisted origin gets 403 without CORS headers and is not forwarded", async () => {
  await withStack(async (stack) => {
    for (
      const origin of [
        OTHER_ORIGIN,
        "http://127.0.0.1:5174",
        "https://127.0.0.1:5173",
        "null",
        "HTTP://127.0.0.1:5173",
      ]
    ) {
      const response = await preflight(stack, "/api/chat", {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
        ...bearer(KEYS.app),
      });
      assert.equal(response.status, 403, origin);
      assert.deepEqual(corsHeaderNames(response), [], origin);
      // The answer depends on Origin: caches must keep them apart.
      assert.equal(response.headers.get("vary"), "Origin");
      const body = await response.json();
      assert.match(body.error, /is not in cors\.allow_origins/);
    }
    assert.equal(stack.sim.records.length, 0);
    const refused = stack.logs.filter((line) => line.msg === "refused");
    assert.equal(refused.length, 5);
    assert.equal(refused[0].reason, "cors_origin_not_allowed");
    assert.equal(refused[0].origin, OTHER_ORIGIN);
    assert.equal(refused[0].level, "warn");

    const metrics = await (await fetch(stack.url + "/metrics")).text();
    assert.match(
      metrics,
      /^butler_refusals_total\{[^}]*reason="cors_origin_not_allowed"[^}]*\} 5$/m,
    );
  });
});

Deno.test("preflight: without a cors section every origin is refused", async () => {
  await withStack(async (stack) => {
    const response = await preflight(stack, "/api/chat", {
      origin: APP_ORIGIN,
      "access-control-request-method": "POST",
    });
    assert.equal(response.status, 403);
    assert.deepEqual(corsHeaderNames(response), []);
    await response.body?.cancel();
    assert.equal(stack.sim.records.length, 0);
  }, CONFIG.replace(/cors:\n( {2}.*\n)+/, ""));
});

Deno.test("preflight: OPTIONS that is not a preflight is an unknown route", async () => {
  await withStack(async (stack) => {
    const response = await fetch(stack.url + "/api/chat", {
      method: "OPTIONS",
      headers: { origin: APP_ORIGIN },
    });
    assert.equal(response.status, 404);
    assert.equal(await response.text(), "404 page not found");
    // A listed origin may still read the 404.
    assert.equal(
      response.headers.get("access-control-allow-origin"),
      APP_ORIGIN,
    );
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("responses to a listed origin carry CORS headers; Origin is not forwarded", async () => {
  await withStack(async (stack) => {
    const response = await chat(stack, {
      origin: APP_ORIGIN,
      ...bearer(KEYS.app),
    });
    assert.equal(response.status, 200);
    assert.equal(
      response.headers.get("access-control-allow-origin"),
      APP_ORIGIN,
    );
    assert.match(response.headers.get("vary")!, /(^|, )Origin$/);
    assert.deepEqual(
      response.headers.get("access-control-expose-headers")!.split(", "),
      ["RateLimit", "RateLimit-Policy", "Retry-After"],
    );
    assert.equal(
      response.headers.get("access-control-allow-credentials"),
      null,
    );
    const lines = (await response.text()).trim().split("\n");
    assert.equal(JSON.parse(lines.at(-1)!).done, true);

    assert.equal(stack.sim.records.length, 1);
    assert.equal(stack.sim.records[0].headers.origin, undefined);

    const health = await fetch(stack.url + "/healthz", {
      headers: { origin: APP_ORIGIN },
    });
    assert.equal(health.headers.get("access-control-allow-origin"), APP_ORIGIN);
    await health.body?.cancel();
  });
});

Deno.test("refusals to a listed origin carry CORS headers, so a page can read them", async () => {
  await withStack(async (stack) => {
    const origin = { origin: APP_ORIGIN };

    const noKey = await chat(stack, origin);
    assert.equal(noKey.status, 401);
    assert.equal(noKey.headers.get("access-control-allow-origin"), APP_ORIGIN);
    assert.match((await noKey.json()).error, /./);

    const denied = await chat(stack, { ...origin, ...bearer(KEYS.app) }, {
      model: "mistral",
      messages: [],
    });
    assert.equal(denied.status, 403);
    assert.equal(denied.headers.get("access-control-allow-origin"), APP_ORIGIN);
    await denied.body?.cancel();

    const unknown = await fetch(stack.url + "/api/nothing", {
      method: "POST",
      headers: { ...origin, ...bearer(KEYS.app) },
    });
    assert.equal(unknown.status, 404);
    assert.equal(
      unknown.headers.get("access-control-allow-origin"),
      APP_ORIGIN,
    );
    await unknown.body?.cancel();
    assert.equal(stack.sim.records.length, 0);

    const first = await chat(stack, { ...origin, ...bearer(KEYS.limited) });
    assert.equal(first.status, 200);
    await first.body?.cancel();
    const limited = await chat(stack, { ...origin, ...bearer(KEYS.limited) });
    assert.equal(limited.status, 429);
    assert.equal(
      limited.headers.get("access-control-allow-origin"),
      APP_ORIGIN,
    );
    assert.match(
      limited.headers.get("access-control-expose-headers")!,
      /Retry-After/,
    );
    assert.ok(Number(limited.headers.get("retry-after")) > 0);
    await limited.body?.cancel();
    assert.equal(stack.sim.records.length, 1, "only the first was forwarded");
  });
});

Deno.test("responses to an unlisted origin or without Origin carry no CORS headers", async () => {
  await withStack(async (stack) => {
    const variants: Record<string, string>[] = [{ origin: OTHER_ORIGIN }, {}];
    for (const headers of variants) {
      const response = await chat(stack, { ...headers, ...bearer(KEYS.app) });
      assert.equal(response.status, 200);
      assert.deepEqual(corsHeaderNames(response), []);
      assert.equal(response.headers.get("vary"), "Origin");
      await response.body?.cancel();

      const refused = await chat(stack, headers);
      assert.equal(refused.status, 401);
      assert.deepEqual(corsHeaderNames(refused), []);
      await refused.body?.cancel();
    }
    assert.equal(stack.sim.records.length, 2);
    for (const record of stack.sim.records) {
      assert.equal(record.headers.origin, undefined);
    }
  });
});

/**
 * Every header name a client library sends, captured by a server that
 * answers each request with a minimal reply (the client may then fail;
 * only its request matters).
 */
async function headersSentBy(
  send: (baseUrl: string) => Promise<unknown>,
): Promise<string[]> {
  const names = new Set<string>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (request) => {
      for (const name of request.headers.keys()) names.add(name);
      return Response.json({ error: "captured" }, { status: 400 });
    },
  );
  try {
    await send(`http://127.0.0.1:${server.addr.port}`).catch(() => {});
  } finally {
    await server.shutdown();
  }
  return [...names];
}

// What a browser sets itself or lets through without a preflight.
const NOT_PREFLIGHTED = new Set([
  "host",
  "connection",
  "content-length",
  "accept-encoding",
  "accept",
  "accept-language",
  "content-language",
]);

Deno.test("preflight: the headers the OpenAI, Anthropic and Ollama clients send are all allowed", async () => {
  const sent = {
    openai: await headersSentBy((baseURL) =>
      new OpenAI({
        apiKey: KEYS.app,
        baseURL: `${baseURL}/v1`,
        maxRetries: 0,
        organization: "org",
        project: "project",
        dangerouslyAllowBrowser: true,
      }).chat.completions.create({
        model: "llama3.2",
        messages: [{ role: "user", content: "hi" }],
        stream: true,
      })
    ),
    anthropic: await headersSentBy((baseURL) =>
      new Anthropic({
        apiKey: KEYS.app,
        baseURL,
        maxRetries: 0,
        dangerouslyAllowBrowser: true,
      }).messages.create({
        model: "llama3.2",
        max_tokens: 16,
        messages: [{ role: "user", content: "hi" }],
      }, { headers: { "anthropic-beta": "test" } })
    ),
    ollama: await headersSentBy((host) =>
      new Ollama({ host, headers: bearer(KEYS.app) }).chat({
        model: "llama3.2",
        messages: [{ role: "user", content: "hi" }],
      })
    ),
  };
  assert.ok(sent.openai.includes("x-stainless-lang"), "the capture works");
  assert.ok(sent.anthropic.includes("anthropic-version"));
  assert.ok(
    sent.anthropic.includes("anthropic-dangerous-direct-browser-access"),
  );
  assert.ok(sent.ollama.includes("authorization"));

  await withStack(async (stack) => {
    for (const [client, names] of Object.entries(sent)) {
      const requested = names.filter((name) => !NOT_PREFLIGHTED.has(name));
      const missing = requested.filter((name) =>
        !CORS_ALLOW_HEADERS.includes(name)
      );
      assert.deepEqual(missing, [], `${client} sends headers not allowed`);

      // What the browser would ask, and what Butler answers.
      const response = await preflight(stack, "/v1/chat/completions", {
        origin: APP_ORIGIN,
        "access-control-request-method": "POST",
        "access-control-request-headers": requested.sort().join(","),
      });
      assert.equal(response.status, 204);
      const allowed = response.headers.get("access-control-allow-headers")!
        .split(", ");
      for (const name of requested) assert.ok(allowed.includes(name), name);
    }
  });
  assert.ok(CORS_ALLOW_METHODS.includes("POST"));
});

Deno.test("cors.allow_origins takes effect on reload", async () => {
  await withStack(async (stack) => {
    const ask = () =>
      preflight(stack, "/api/chat", {
        origin: OTHER_ORIGIN,
        "access-control-request-method": "POST",
      });
    const before = await ask();
    assert.equal(before.status, 403);
    await before.body?.cancel();

    const text = await Deno.readTextFile(stack.configPath);
    await Deno.writeTextFile(
      stack.configPath,
      text.replace("- https://chat.example.com", `- ${OTHER_ORIGIN}`),
    );
    assert.equal(await stack.butler.reload(), true);
    const after = await ask();
    assert.equal(after.status, 204);
    assert.equal(
      after.headers.get("access-control-allow-origin"),
      OTHER_ORIGIN,
    );
    assert.equal(stack.sim.records.length, 0);
  });
});
