/**
 * Issue 3 end to end, one table per rule and a row per dialect: generation
 * and context caps (refuse, clamp, absent), every evasion kind of the body
 * reading against them, the stream guard, `max_request_bytes`, `keep_alive`,
 * listings and model management. The simulator's record is what Ollama would
 * act on; a refused request must leave no record at all.
 */

import assert from "node:assert/strict";
import {
  bearer,
  KEYS,
  postJson,
  type Stack,
  startStack,
  withStackFor,
} from "./support/harness.ts";
import type { SimOptions, SimRecord } from "./sim/ollama_sim.ts";
import { type JsonNode, parseJsonAsGo } from "../src/request/go_json.ts";

const CONFIG = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: capped
    key: ${KEYS.app}
    allow_models: ["llama3.2", "nomic-embed-text"]
    deny_models: ["llama3.2:1b"]
    max_predict: 100
    max_ctx: 4096
    max_keep_alive: 10m
    max_request_bytes: 4096
  - name: clamped
    key: ${KEYS.limited}
    allow_models: ["llama3.2", "nomic-embed-text"]
    deny_models: ["llama3.2:1b"]
    cap_mode: clamp
    max_predict: 100
    max_ctx: 4096
    max_keep_alive: 600
  - name: admin
    key: ${KEYS.admin}
    allow_models: ["*"]
    allow_management: true
`;

const CAP = 100;

type Dialect = "native" | "openai" | "anthropic";

function withStack(
  fn: (stack: Stack) => Promise<void>,
  sim: SimOptions = {},
) {
  return withStackFor(CONFIG, fn, { sim });
}

function post(
  stack: Stack,
  path: string,
  body: unknown,
  key: string = KEYS.app,
) {
  return postJson(stack, path, { body, headers: bearer(key) });
}

/** The error message of a refusal, after checking the dialect's shape. */
// deno-lint-ignore no-explicit-any
function dialectMessage(body: any, dialect: Dialect): string {
  switch (dialect) {
    case "native":
      assert.equal(typeof body.error, "string", JSON.stringify(body));
      return body.error;
    case "openai":
      assert.equal(typeof body.error?.message, "string", JSON.stringify(body));
      assert.equal(typeof body.error.type, "string");
      assert.equal(body.error.param, null);
      return body.error.message;
    case "anthropic":
      assert.equal(body.type, "error", JSON.stringify(body));
      assert.equal(typeof body.error?.type, "string");
      assert.equal(typeof body.error.message, "string");
      return body.error.message;
  }
}

/** Go's key folding for the test's own check: upper(lower(c)). */
function goFold(key: string): string {
  return [...key].map((c) => c.toLowerCase().toUpperCase()).join("");
}

/** Every key of `object` that Go would read into the field `name`. */
function keysFor(node: JsonNode, name: string): string[] {
  assert.equal(node.kind, "object");
  if (node.kind !== "object") return [];
  return node.entries.map(([key]) => key).filter((key) =>
    goFold(key) === goFold(name)
  );
}

function rawJson(record: SimRecord): JsonNode {
  return parseJsonAsGo(record.rawBody);
}

function rawText(record: SimRecord): string {
  return new TextDecoder().decode(record.rawBody);
}

// ---- generation caps --------------------------------------------------------

/** A route that generates, with where its cap lives. */
interface CapRoute {
  path: string;
  dialect: Dialect;
  /** The field as Butler names it in a refusal. */
  field: string;
  /** A valid body without any cap. */
  base: Record<string, unknown>;
  /** The body with the cap field set to `value` (any JSON). */
  withCap(value: unknown): Record<string, unknown>;
  /** The cap Ollama acts on. */
  acted(record: SimRecord): number | undefined;
  /** Checks the rewritten body has one canonical key for the field. */
  canonical(record: SimRecord): void;
}

function nativeRoute(path: string, base: Record<string, unknown>): CapRoute {
  return {
    path,
    dialect: "native",
    field: "options.num_predict",
    base,
    withCap: (value) => ({ ...base, options: { num_predict: value } }),
    acted: (record) => record.acted?.numPredict,
    canonical(record) {
      const body = rawJson(record);
      const options = keysFor(body, "options");
      assert.deepEqual(options, ["options"]);
      const node = body.kind === "object"
        ? body.entries.find(([key]) => key === "options")![1]
        : undefined;
      assert.ok(node?.kind === "object");
      assert.deepEqual(
        node.entries.map(([key]) => key).filter((k) => k === "num_predict"),
        ["num_predict"],
      );
    },
  };
}

function topLevelRoute(
  path: string,
  dialect: Dialect,
  field: "max_tokens" | "max_output_tokens",
  base: Record<string, unknown>,
): CapRoute {
  return {
    path,
    dialect,
    field,
    base,
    withCap: (value) => ({ ...base, [field]: value }),
    acted: (record) =>
      field === "max_tokens"
        ? record.acted?.maxTokens
        : record.acted?.maxOutputTokens,
    canonical(record) {
      assert.deepEqual(keysFor(rawJson(record), field), [field]);
    },
  };
}

const CAP_ROUTES: CapRoute[] = [
  nativeRoute("/api/generate", {
    model: "llama3.2",
    prompt: "hi",
    stream: false,
  }),
  nativeRoute("/api/chat", {
    model: "llama3.2",
    messages: [{ role: "user", content: "hi" }],
    stream: false,
  }),
  topLevelRoute("/v1/chat/completions", "openai", "max_tokens", {
    model: "llama3.2",
    messages: [{ role: "user", content: "hi" }],
  }),
  topLevelRoute("/v1/completions", "openai", "max_tokens", {
    model: "llama3.2",
    prompt: "hi",
  }),
  topLevelRoute("/v1/messages", "anthropic", "max_tokens", {
    model: "llama3.2",
    messages: [{ role: "user", content: "hi" }],
  }),
  topLevelRoute("/v1/responses", "openai", "max_output_tokens", {
    model: "llama3.2",
    input: "hi",
  }),
];

Deno.test("a cap over the limit is refused with 400 naming field, value and cap", async (t) => {
  await withStack(async (stack) => {
    for (const route of CAP_ROUTES) {
      await t.step(route.path, async () => {
        const response = await post(stack, route.path, route.withCap(500));
        assert.equal(response.status, 400);
        const message = dialectMessage(await response.json(), route.dialect);
        assert.match(message, new RegExp(route.field.replace(".", "\\.")));
        assert.match(message, /\b500\b/);
        assert.match(message, /\b100\b/);
      });
    }
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("cap_mode clamp forwards the cap lowered, in one canonical key", async (t) => {
  await withStack(async (stack) => {
    for (const route of CAP_ROUTES) {
      await t.step(route.path, async () => {
        stack.sim.clear();
        const response = await post(
          stack,
          route.path,
          route.withCap(500),
          KEYS.limited,
        );
        assert.equal(response.status, 200);
        await response.body?.cancel();
        assert.equal(stack.sim.records.length, 1);
        const record = stack.sim.records[0];
        assert.equal(record.error, undefined);
        assert.equal(route.acted(record), CAP);
        route.canonical(record);
      });
    }
  });
});

Deno.test("a request that does not ask for a cap is forwarded with the cap set", async (t) => {
  await withStack(async (stack) => {
    for (const key of [KEYS.app, KEYS.limited]) {
      for (const route of CAP_ROUTES) {
        await t.step(`${route.path} (${key.slice(9, 13)})`, async () => {
          stack.sim.clear();
          const response = await post(stack, route.path, route.base, key);
          assert.equal(response.status, 200);
          await response.body?.cancel();
          const record = stack.sim.records[0];
          assert.equal(route.acted(record), CAP);
          route.canonical(record);
        });
      }
    }
  });
});

Deno.test("a body within every cap reaches Ollama byte for byte", async (t) => {
  await withStack(async (stack) => {
    for (const route of CAP_ROUTES) {
      await t.step(route.path, async () => {
        stack.sim.clear();
        // Odd spacing and key order that a re-serialization would change.
        const body = JSON.stringify(route.withCap(50), null, 1) + "\n ";
        const response = await post(stack, route.path, body);
        assert.equal(response.status, 200);
        await response.body?.cancel();
        const record = stack.sim.records[0];
        assert.equal(rawText(record), body);
        assert.equal(route.acted(record), 50);
      });
    }
    // No cap on embeddings: untouched too.
    stack.sim.clear();
    const embed = '{"model": "nomic-embed-text",  "input": "x"}';
    const response = await post(stack, "/api/embed", embed);
    assert.equal(response.status, 200);
    await response.body?.cancel();
    assert.equal(rawText(stack.sim.records[0]), embed);
  });
});

/** One evasion of a cap: a raw body and what must happen to it. */
interface Evasion {
  name: string;
  body: string;
  /** 400: refused, never forwarded; a number: what Ollama acts on. */
  expect: 400 | number;
}

const NATIVE_PREFIX = '{"model":"llama3.2","prompt":"hi","stream":false,';

const NATIVE_EVASIONS: Evasion[] = [
  { name: "Options", body: '"Options":{"num_predict":500}}', expect: 400 },
  { name: "OPTIONS", body: '"OPTIONS":{"num_predict":500}}', expect: 400 },
  {
    name: "folded optionſ",
    body: '"optionſ":{"num_predict":500}}',
    expect: 400,
  },
  // Go's tables leave ı and İ alone ("optıons" is then an unknown key and
  // num_predict absent); the shared notes fold them to i. Under the cap, the
  // value would pass under one reading and be missing under the other.
  {
    name: "dotless optıons under the cap",
    body: '"opt\u0131ons":{"num_predict":10}}',
    expect: 400,
  },
  {
    name: "dotted optİons under the cap",
    body: '"opt\u0130ons":{"num_predict":10}}',
    expect: 400,
  },
  // Option keys are exact: NUM_PREDICT is an unknown option to Ollama, so
  // num_predict is absent and the cap must still be written in.
  { name: "NUM_PREDICT", body: '"options":{"NUM_PREDICT":500}}', expect: CAP },
  {
    name: "duplicate num_predict, last over",
    body: '"options":{"num_predict":50,"num_predict":500}}',
    expect: 400,
  },
  // Go takes the last; Butler refuses keys that disagree rather than guess.
  {
    name: "duplicate num_predict, last under",
    body: '"options":{"num_predict":500,"num_predict":50}}',
    expect: 400,
  },
  {
    name: "duplicate num_predict, equal",
    body: '"options":{"num_predict":50,"num_predict":50}}',
    expect: 50,
  },
  {
    name: "options twice (Go merges maps)",
    body: '"options":{"num_predict":500},"options":{"temperature":1}}',
    expect: 400,
  },
  {
    name: "options and Options",
    body: '"options":{"num_predict":50},"Options":{"num_predict":500}}',
    expect: 400,
  },
  { name: "string", body: '"options":{"num_predict":"500"}}', expect: 400 },
  {
    name: "fraction under",
    body: '"options":{"num_predict":100.9}}',
    expect: 100,
  },
  {
    name: "fraction over",
    body: '"options":{"num_predict":500.5}}',
    expect: 400,
  },
  {
    name: "exponent over",
    body: '"options":{"num_predict":5e2}}',
    expect: 400,
  },
  { name: "huge", body: '"options":{"num_predict":1e30}}', expect: 400 },
  { name: "negative", body: '"options":{"num_predict":-1}}', expect: CAP },
  { name: "zero", body: '"options":{"num_predict":0}}', expect: CAP },
  { name: "null", body: '"options":{"num_predict":null}}', expect: CAP },
  { name: "options null", body: '"options":null}', expect: CAP },
  { name: "options array", body: '"options":[500]}', expect: 400 },
];

const V1_EVASIONS = (field: string): Evasion[] => [
  { name: "upper case", body: `"${field.toUpperCase()}":500}`, expect: 400 },
  {
    name: "folded ſ",
    body: `"${field.replace("s", "ſ")}":500}`,
    expect: field.includes("s") ? 400 : 400,
  },
  {
    name: "Kelvin sign",
    body: `"${field.replace("k", "\u212a")}":500}`,
    expect: 400,
  },
  {
    name: "duplicate, last over",
    body: `"${field}":50,"${field}":500}`,
    expect: 400,
  },
  {
    name: "duplicate, last under",
    body: `"${field}":500,"${field}":50}`,
    expect: 400,
  },
  {
    name: "duplicate, equal",
    body: `"${field}":50,"${field}":50}`,
    expect: 50,
  },
  {
    name: "case variants",
    body: `"${field}":50,"${field.toUpperCase()}":500}`,
    expect: 400,
  },
  { name: "string", body: `"${field}":"500"}`, expect: 400 },
  { name: "fraction", body: `"${field}":50.5}`, expect: 400 },
  { name: "exponent", body: `"${field}":1e2}`, expect: 400 },
  { name: "huge", body: `"${field}":99999999999999999999999}`, expect: 400 },
  { name: "negative", body: `"${field}":-1}`, expect: CAP },
  { name: "zero", body: `"${field}":0}`, expect: CAP },
  { name: "null", body: `"${field}":null}`, expect: CAP },
  { name: "bool", body: `"${field}":true}`, expect: 400 },
];

function prefixFor(route: CapRoute): string {
  return JSON.stringify(route.base).slice(0, -1) + ",";
}

Deno.test("every evasion kind of the body reading fails against the caps", async (t) => {
  await withStack(async (stack) => {
    for (const route of CAP_ROUTES) {
      const evasions = route.dialect === "native"
        ? NATIVE_EVASIONS
        : V1_EVASIONS(route.field);
      const prefix = route.dialect === "native" && route.path === "/api/chat"
        ? prefixFor(route)
        : route.dialect === "native"
        ? NATIVE_PREFIX
        : prefixFor(route);
      for (const evasion of evasions) {
        await t.step(`${route.path}: ${evasion.name}`, async () => {
          stack.sim.clear();
          const response = await post(stack, route.path, prefix + evasion.body);
          if (evasion.expect === 400) {
            assert.equal(response.status, 400, await response.text());
            assert.equal(stack.sim.records.length, 0);
            return;
          }
          assert.equal(response.status, 200, await response.text());
          const record = stack.sim.records[0];
          assert.equal(record.error, undefined);
          assert.equal(route.acted(record), evasion.expect);
        });
      }
    }
  });
});

Deno.test("clamped evasions reach Ollama as one canonical key at the cap", async (t) => {
  await withStack(async (stack) => {
    for (const route of CAP_ROUTES.filter((r) => r.dialect !== "native")) {
      const field = route.field;
      const bodies = [
        `"${field.toUpperCase()}":500}`,
        `"${field.replace("s", "ſ")}":500}`,
        `"${field}":-1}`,
        `"${field}":null,"${field.toUpperCase()}":null}`,
      ];
      for (const tail of bodies) {
        await t.step(`${route.path}: ${tail}`, async () => {
          stack.sim.clear();
          const response = await post(
            stack,
            route.path,
            prefixFor(route) + tail,
            KEYS.limited,
          );
          assert.equal(response.status, 200, await response.text());
          const record = stack.sim.records[0];
          assert.equal(route.acted(record), CAP);
          route.canonical(record);
        });
      }
    }
    await t.step("/api/generate: Options over", async () => {
      stack.sim.clear();
      const response = await post(
        stack,
        "/api/generate",
        NATIVE_PREFIX + '"Options":{"num_predict":500,"temperature":0.5}}',
        KEYS.limited,
      );
      assert.equal(response.status, 200, await response.text());
      const record = stack.sim.records[0];
      assert.equal(record.acted?.numPredict, CAP);
      CAP_ROUTES[0].canonical(record);
    });
  });
});

Deno.test("max_ctx caps options.num_ctx; absent stays the server default", async () => {
  await withStack(async (stack) => {
    const body = (numCtx?: unknown) => ({
      model: "llama3.2",
      prompt: "hi",
      stream: false,
      options: numCtx === undefined
        ? { num_predict: 10 }
        : { num_predict: 10, num_ctx: numCtx },
    });

    const over = await post(stack, "/api/generate", body(8192));
    assert.equal(over.status, 400);
    const message = (await over.json()).error;
    assert.match(message, /options\.num_ctx/);
    assert.match(message, /8192/);
    assert.match(message, /4096/);
    const typed = await post(stack, "/api/chat", {
      ...body("8192"),
      messages: [],
    });
    assert.equal(typed.status, 400);
    await typed.body?.cancel();
    assert.equal(stack.sim.records.length, 0);

    const clamped = await post(
      stack,
      "/api/generate",
      body(8192),
      KEYS.limited,
    );
    assert.equal(clamped.status, 200);
    await clamped.body?.cancel();
    assert.equal(stack.sim.records[0].acted?.numCtx, 4096);

    const fraction = await post(stack, "/api/generate", body(4096.7));
    assert.equal(fraction.status, 200);
    await fraction.body?.cancel();
    assert.equal(stack.sim.records[1].acted?.numCtx, 4096);

    const absent = JSON.stringify(body());
    const untouched = await post(stack, "/api/generate", absent);
    assert.equal(untouched.status, 200);
    await untouched.body?.cancel();
    assert.equal(stack.sim.records[2].acted?.numCtx, undefined);
    assert.equal(rawText(stack.sim.records[2]), absent);
  });
});

// ---- the stream guard -------------------------------------------------------

/** SSE `data:` payloads of a body. */
function sseData(text: string): string[] {
  return text.split("\n").filter((line) => line.startsWith("data: ")).map((
    line,
  ) => line.slice(6));
}

async function waitFor(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 200 && !check(); i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.ok(check(), what);
}

Deno.test("a stream past the cap is ended the dialect's way and Ollama is cancelled", async (t) => {
  await withStack(async (stack) => {
    await t.step("/v1/chat/completions", async () => {
      stack.sim.clear();
      const response = await post(stack, "/v1/chat/completions", {
        model: "llama3.2",
        messages: [{ role: "user", content: "hi" }],
        stream: true,
      });
      assert.equal(response.status, 200);
      const data = sseData(await response.text());
      assert.equal(data.at(-1), "[DONE]");
      const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
      const content = chunks.filter((c) => c.choices?.[0]?.delta?.content);
      assert.equal(content.length, CAP);
      assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
      // The simulator was told the cap but ignored it.
      assert.equal(stack.sim.records[0].acted?.maxTokens, CAP);
      await waitFor(
        () => stack.sim.records[0].cancelled,
        "upstream stream cancelled",
      );
    });

    await t.step("/v1/completions", async () => {
      stack.sim.clear();
      const response = await post(stack, "/v1/completions", {
        model: "llama3.2",
        prompt: "hi",
        stream: true,
      });
      const data = sseData(await response.text());
      assert.equal(data.at(-1), "[DONE]");
      const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
      assert.equal(chunks.filter((c) => c.choices?.[0]?.text).length, CAP);
      assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
      await waitFor(() => stack.sim.records[0].cancelled, "cancelled");
    });

    await t.step("/v1/messages", async () => {
      stack.sim.clear();
      const response = await post(stack, "/v1/messages", {
        model: "llama3.2",
        messages: [{ role: "user", content: "hi" }],
        stream: true,
      });
      const events = sseData(await response.text()).map((d) => JSON.parse(d));
      const deltas = events.filter((e) => e.type === "content_block_delta");
      assert.equal(deltas.length, CAP);
      const stop = events.find((e) => e.type === "message_delta");
      assert.equal(stop.delta.stop_reason, "max_tokens");
      assert.equal(events.at(-1).type, "message_stop");
      await waitFor(() => stack.sim.records[0].cancelled, "cancelled");
    });

    await t.step("/api/chat honours num_predict: ends normally", async () => {
      stack.sim.clear();
      const response = await post(stack, "/api/chat", {
        model: "llama3.2",
        messages: [{ role: "user", content: "hi" }],
      });
      const lines = (await response.text()).trim().split("\n").map((l) =>
        JSON.parse(l)
      );
      assert.equal(lines.filter((l) => !l.done).length, CAP);
      assert.equal(lines.at(-1).done_reason, "length");
      assert.equal(typeof lines.at(-1).eval_count, "number");
    });
  }, { ignoreMaxTokens: true, chunks: CAP + 1000, chunkDelayMs: 2 });
});

// ---- max_request_bytes ------------------------------------------------------

/** Sends a raw HTTP/1.1 request and returns the status line and body. */
async function rawRequest(
  stack: Stack,
  head: string,
  body = "",
): Promise<string> {
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: Number(new URL(stack.url).port),
  });
  try {
    await conn.write(new TextEncoder().encode(head + body));
    const buffer = new Uint8Array(64 * 1024);
    let text = "";
    const deadline = setTimeout(() => conn.close(), 5_000);
    try {
      for (;;) {
        const n = await conn.read(buffer);
        if (n === null) break;
        text += new TextDecoder().decode(buffer.subarray(0, n));
        if (/\r\n\r\n[\s\S]*\}/.test(text)) break;
      }
    } finally {
      clearTimeout(deadline);
    }
    return text;
  } finally {
    try {
      conn.close();
    } catch {
      // closed by the deadline
    }
  }
}

Deno.test("max_request_bytes: 413 before reading when Content-Length says so", async (t) => {
  await withStack(async (stack) => {
    const routes: [string, Dialect][] = [
      ["/api/chat", "native"],
      ["/v1/chat/completions", "openai"],
      ["/v1/messages", "anthropic"],
    ];
    for (const [path, dialect] of routes) {
      await t.step(path, async () => {
        // Headers only: the body is never sent, so an answer proves the
        // decision came before reading it.
        const answer = await rawRequest(
          stack,
          `POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEYS.app}\r\n` +
            `Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n`,
          '{"model":"llama3.2",',
        );
        assert.match(answer, /^HTTP\/1\.1 413/);
        const json = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4));
        assert.match(dialectMessage(json, dialect), /4096/);
      });
    }
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("max_request_bytes: 413 while reading a chunked body", async (t) => {
  await withStack(async (stack) => {
    const routes: [string, Dialect][] = [
      ["/api/generate", "native"],
      ["/v1/completions", "openai"],
      ["/v1/messages", "anthropic"],
    ];
    for (const [path, dialect] of routes) {
      await t.step(path, async () => {
        const chunk = new TextEncoder().encode(" ".repeat(1000));
        let sent = 0;
        const body = new ReadableStream<Uint8Array>({
          pull(controller) {
            if (sent === 0) {
              controller.enqueue(
                new TextEncoder().encode('{"model":"llama3.2"'),
              );
            } else if (sent < 10) {
              controller.enqueue(chunk);
            } else {
              controller.enqueue(new TextEncoder().encode("}"));
              controller.close();
            }
            sent++;
          },
        });
        const response = await fetch(stack.url + path, {
          method: "POST",
          headers: { "content-type": "application/json", ...bearer(KEYS.app) },
          body,
        });
        assert.equal(response.status, 413);
        dialectMessage(await response.json(), dialect);
      });
    }
    // Within the limit, chunked is fine.
    const small = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(
          new TextEncoder().encode(
            '{"model":"llama3.2","prompt":"hi","stream":false}',
          ),
        );
        controller.close();
      },
    });
    const ok = await fetch(stack.url + "/api/generate", {
      method: "POST",
      headers: bearer(KEYS.app),
      body: small,
    });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    assert.equal(stack.sim.records.length, 1);
  });
});

// ---- keep_alive -------------------------------------------------------------

Deno.test("keep_alive: capped, forever lowered or refused, unload needs management", async (t) => {
  await withStack(async (stack) => {
    const cases: {
      name: string;
      key: string;
      keepAlive: unknown;
      path?: string;
      raw?: string;
      status: number;
      acted?: unknown;
    }[] = [
      {
        name: "within cap",
        key: KEYS.app,
        keepAlive: "5m",
        status: 200,
        acted: "5m",
      },
      { name: "over cap", key: KEYS.app, keepAlive: "1h", status: 400 },
      { name: "seconds over cap", key: KEYS.app, keepAlive: 3600, status: 400 },
      { name: "forever -1", key: KEYS.app, keepAlive: -1, status: 400 },
      { name: "forever -1m", key: KEYS.app, keepAlive: "-1m", status: 400 },
      { name: "unload 0", key: KEYS.app, keepAlive: 0, status: 403 },
      { name: "unload 0s", key: KEYS.app, keepAlive: "0s", status: 403 },
      { name: "unload 1ns", key: KEYS.app, keepAlive: "1ns", status: 403 },
      { name: "unload 1e-9", key: KEYS.app, keepAlive: 1e-9, status: 403 },
      {
        name: "unreadable",
        key: KEYS.app,
        keepAlive: "5 minutes",
        status: 400,
      },
      {
        name: "clamp over",
        key: KEYS.limited,
        keepAlive: "1h",
        status: 200,
        acted: 600,
      },
      {
        name: "clamp forever",
        key: KEYS.limited,
        keepAlive: -1,
        status: 200,
        acted: 600,
      },
      { name: "clamp unload", key: KEYS.limited, keepAlive: 0, status: 403 },
      {
        name: "admin unload",
        key: KEYS.admin,
        keepAlive: 0,
        status: 200,
        acted: 0,
      },
      {
        name: "admin forever",
        key: KEYS.admin,
        keepAlive: -1,
        status: 200,
        acted: -1,
      },
      {
        name: "case variant KEEP_ALIVE forever",
        key: KEYS.app,
        keepAlive: undefined,
        raw:
          '{"model":"llama3.2","prompt":"hi","stream":false,"KEEP_ALIVE":-1}',
        status: 400,
      },
      {
        name: "clamp folded keep_aliveK",
        key: KEYS.limited,
        keepAlive: undefined,
        raw:
          '{"model":"llama3.2","prompt":"hi","stream":false,"\u212aeep_alive":-1}',
        status: 200,
        acted: 600,
      },
      {
        name: "embed forever",
        key: KEYS.app,
        path: "/api/embed",
        keepAlive: -1,
        status: 400,
      },
      {
        name: "embed clamp",
        key: KEYS.limited,
        path: "/api/embed",
        keepAlive: "2h",
        status: 200,
        acted: 600,
      },
    ];
    for (const c of cases) {
      await t.step(c.name, async () => {
        stack.sim.clear();
        const path = c.path ?? "/api/generate";
        const body = c.raw ??
          (path === "/api/embed"
            ? { model: "nomic-embed-text", input: "x", keep_alive: c.keepAlive }
            : {
              model: "llama3.2",
              prompt: "hi",
              stream: false,
              options: { num_predict: 5 },
              keep_alive: c.keepAlive,
            });
        const response = await post(stack, path, body, c.key);
        assert.equal(response.status, c.status, await response.text());
        if (c.status !== 200) {
          assert.equal(stack.sim.records.length, 0);
          return;
        }
        assert.deepEqual(stack.sim.records[0].acted?.keepAlive, c.acted);
      });
    }
  });
});

// ---- what a client may see --------------------------------------------------

Deno.test("listings are filtered, every other field untouched", async () => {
  await withStack(async (stack) => {
    const allowed = (name: string) =>
      name === "llama3.2:latest" || name === "nomic-embed-text:latest";

    for (const path of ["/api/tags", "/api/ps"]) {
      const direct = await (await fetch(stack.sim.url + path)).json();
      const through = await (await fetch(stack.url + path, {
        headers: bearer(KEYS.app),
      })).json();
      const expected = direct.models.filter((m: { name: string }) =>
        allowed(m.name)
      );
      assert.ok(expected.length > 0, path);
      assert.ok(expected.length < direct.models.length, path);
      const strip = (m: Record<string, unknown>) => ({
        ...m,
        expires_at: undefined,
      });
      assert.deepEqual(through.models.map(strip), expected.map(strip), path);
      assert.deepEqual(Object.keys(through), Object.keys(direct), path);
    }

    const direct = await (await fetch(stack.sim.url + "/v1/models")).json();
    const through = await (await fetch(stack.url + "/v1/models", {
      headers: bearer(KEYS.app),
    })).json();
    assert.equal(through.object, direct.object);
    assert.deepEqual(
      through.data,
      direct.data.filter((m: { id: string }) => allowed(m.id)),
    );

    const admin = await (await fetch(stack.url + "/api/tags", {
      headers: bearer(KEYS.admin),
    })).json();
    // allow_models "*" still leaves cloud models out: explicit only.
    assert.deepEqual(
      admin.models.map((m: { name: string }) => m.name),
      (await (await fetch(stack.sim.url + "/api/tags")).json()).models
        .map((m: { name: string }) => m.name)
        .filter((n: string) => !n.endsWith("-cloud")),
    );
  });
});

Deno.test("details of a hidden model answer as if it did not exist, in dialect", async () => {
  await withStack(async (stack) => {
    for (const model of ["qwen2.5:7b", "llama3.2:1b", "gpt-oss:120b-cloud"]) {
      const show = await post(stack, "/api/show", { model });
      assert.equal(show.status, 404);
      assert.match(dialectMessage(await show.json(), "native"), /not found/);
      const byName = await post(stack, "/api/show", { name: model });
      assert.equal(byName.status, 404);
      await byName.body?.cancel();
      const detail = await fetch(`${stack.url}/v1/models/${model}`, {
        headers: bearer(KEYS.app),
      });
      assert.equal(detail.status, 404);
      const body = await detail.json();
      dialectMessage(body, "openai");
      assert.equal(body.error.type, "not_found_error");
    }
    assert.equal(stack.sim.records.length, 0);
    const visible = await fetch(`${stack.url}/v1/models/llama3.2`, {
      headers: bearer(KEYS.app),
    });
    assert.equal(visible.status, 200);
    await visible.body?.cancel();
  });
});

// ---- model management -------------------------------------------------------

Deno.test("management routes need allow_management and check every model", async (t) => {
  await withStack(async (stack) => {
    const digest = "sha256:" + "a".repeat(64);
    const routes: [string, string, unknown][] = [
      ["POST", "/api/pull", { model: "llama3.2" }],
      ["POST", "/api/push", { model: "llama3.2" }],
      ["POST", "/api/create", { model: "mine", from: "llama3.2" }],
      ["POST", "/api/copy", { source: "llama3.2", destination: "llama3.2:x" }],
      ["DELETE", "/api/delete", { model: "llama3.2" }],
      ["POST", `/api/blobs/${digest}`, "blob"],
      ["HEAD", `/api/blobs/${digest}`, undefined],
    ];
    for (const [method, path, body] of routes) {
      await t.step(`${method} ${path} without the permission`, async () => {
        const response = await fetch(stack.url + path, {
          method,
          headers: bearer(KEYS.app),
          body: body === undefined
            ? undefined
            : typeof body === "string"
            ? body
            : JSON.stringify(body),
        });
        assert.equal(response.status, 403);
        await response.body?.cancel();
      });
    }
    assert.equal(stack.sim.records.length, 0);
  });

  const restricted = CONFIG + `
  - name: curator
    key: test-key-curator-0123456789
    allow_models: ["llama3.2", "mine"]
    deny_models: ["llama3.2:1b"]
    allow_management: true
`;
  const stack = await startStack(restricted);
  try {
    const curator = "test-key-curator-0123456789";
    const cases: [string, unknown, number][] = [
      ["/api/copy", { source: "llama3.2", destination: "mine" }, 200],
      ["/api/copy", { source: "qwen2.5:7b", destination: "mine" }, 403],
      ["/api/copy", { source: "llama3.2", destination: "llama3.2:1b" }, 403],
      ["/api/copy", { source: "llama3.2", destination: "qwen2.5" }, 403],
      ["/api/create", { model: "mine", from: "llama3.2" }, 200],
      ["/api/create", { model: "other", from: "llama3.2" }, 403],
      ["/api/create", { model: "mine", from: "qwen2.5:7b" }, 403],
      ["/api/create", { name: "other", from: "llama3.2" }, 403],
      // A remote model would send prompts off the machine under a local name.
      ["/api/create", {
        model: "mine",
        from: "llama3.2",
        remote_host: "https://ollama.com",
      }, 403],
      ["/api/create", {
        model: "mine",
        from: "llama3.2",
        Remote_Host: "http://10.0.0.1:11434",
      }, 403],
      ["/api/pull", { model: "qwen2.5:7b" }, 403],
      ["/api/pull", { name: "qwen2.5:7b" }, 403],
    ];
    for (const [path, body, status] of cases) {
      await t.step(`${path} ${JSON.stringify(body)}`, async () => {
        stack.sim.clear();
        const response = await post(stack, path, body, curator);
        assert.equal(response.status, status);
        await response.body?.cancel();
        assert.equal(stack.sim.records.length, status === 200 ? 1 : 0);
      });
    }
  } finally {
    await stack.close();
  }
});

Deno.test("a blob upload over the limit is 413, one broken off is the client's, neither blames Ollama", async () => {
  const config = CONFIG + `
  - name: uploader
    key: test-key-uploader-0123456789
    allow_models: ["*"]
    allow_management: true
    max_request_bytes: 100000
`;
  await withStackFor(config, async (stack) => {
    const digest = "sha256:" + "b".repeat(64);
    const headers = bearer("test-key-uploader-0123456789");
    // Chunked, so nothing is known until the 100 001st byte.
    let sent = 0;
    const tooMuch = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 300_000) return controller.close();
        controller.enqueue(new Uint8Array(10_000));
        sent += 10_000;
      },
    });
    const over = await fetch(`${stack.url}/api/blobs/${digest}`, {
      method: "POST",
      headers,
      body: tooMuch,
    });
    assert.equal(over.status, 413);
    assert.match((await over.json()).error, /100000 bytes/);

    // Declares 90 kB, sends 20 kB, hangs up.
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: Number(new URL(stack.url).port),
    });
    await conn.write(new TextEncoder().encode(
      `POST /api/blobs/${digest} HTTP/1.1\r\nHost: x\r\n` +
        `Authorization: ${headers.authorization}\r\n` +
        `Content-Length: 90000\r\n\r\n`,
    ));
    await conn.write(new Uint8Array(20_000));
    await new Promise((resolve) => setTimeout(resolve, 100));
    conn.close();

    const reasons = await (async () => {
      for (let i = 0; i < 100; i++) {
        const found = stack.logs.filter((l) => l.msg === "refused")
          .map((l) => l.reason);
        if (found.length >= 2) return found;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return stack.logs.filter((l) => l.msg === "refused").map((l) => l.reason);
    })();
    assert.deepEqual(reasons, ["body_too_large", "client_closed"]);
    // An upload streams through as it arrives, so Ollama saw both start; it
    // got neither whole and stored nothing (the digest does not match).
    const stored = () =>
      stack.sim.records.filter((record) =>
        !/digest mismatch/.test(record.error ?? "")
      );
    for (let i = 0; i < 100 && stored().length > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(stack.sim.records.length, 2);
    assert.deepEqual(stored(), [], "Ollama stored a refused upload");
    const metrics = await (await fetch(`${stack.url}/metrics`)).text();
    assert.doesNotMatch(metrics, /butler_upstream_up 0/);
    assert.doesNotMatch(metrics, /reason="upstream_unavailable"/);
  });
});
