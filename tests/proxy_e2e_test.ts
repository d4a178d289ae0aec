/**
 * The core request path over real sockets: Butler in front of the Ollama
 * simulator. The simulator's record is the proof of what Ollama would have
 * acted on; a refused request must leave no record at all.
 */

import assert from "node:assert/strict";
import { zstdCompressSync } from "node:zlib";
import {
  bearer,
  KEYS,
  postJson,
  type Stack,
  startStack,
  withStackFor,
} from "./support/harness.ts";

const CONFIG = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2", "nomic-embed-text"]
    deny_models: ["llama3.2:1b"]
  - name: admin
    key: ${KEYS.admin}
    allow_models: ["*"]
    allow_management: true
`;

function withStack(fn: (stack: Stack) => Promise<void>) {
  return withStackFor(CONFIG, fn);
}

function post(
  stack: Stack,
  path: string,
  body: unknown,
  headers: Record<string, string> = bearer(KEYS.app),
) {
  return postJson(stack, path, { body, headers });
}

Deno.test("an allowed chat is forwarded and its answer streams back", async () => {
  await withStack(async (stack) => {
    const response = await post(stack, "/api/chat", {
      model: "llama3.2",
      messages: [{ role: "user", content: "hello" }],
    });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("x-accel-buffering"), "no");
    const lines = (await response.text()).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assert.equal(lines.at(-1).done, true);
    assert.ok(lines.length > 2);
    assert.equal(stack.sim.records.length, 1);
    const record = stack.sim.records[0];
    assert.deepEqual(record.acted?.models, [
      "registry.ollama.ai/library/llama3.2:latest",
    ]);
    assert.deepEqual(record.acted?.texts, ["hello"]);
  });
});

Deno.test("no credential Butler received reaches Ollama", async () => {
  await withStack(async (stack) => {
    const response = await post(stack, "/api/generate", {
      model: "llama3.2",
      prompt: "hi",
      stream: false,
    }, {
      ...bearer(KEYS.app),
      cookie: "session=secret",
      "x-butler-user": "mallory",
      "x-butler-client": "admin",
      "x-butler-user-token": "forged",
      origin: "http://evil.example",
      "proxy-authorization": "Basic abc",
      forwarded: "for=10.0.0.1",
      "x-forwarded-for": "10.0.0.1",
      "x-forwarded-port": "443",
      "x-forwarded-prefix": "/admin",
      "x-real-ip": "10.0.0.1",
    });
    assert.equal(response.status, 200);
    await response.body?.cancel();
    const headers = stack.sim.records[0].headers;
    for (
      const name of [
        "authorization",
        "cookie",
        "origin",
        "x-api-key",
        "proxy-authorization",
        "x-butler-user",
        "x-butler-user-token",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-real-ip",
      ]
    ) {
      assert.equal(headers[name], undefined, `${name} must not reach Ollama`);
    }
    assert.equal(headers["x-butler-client"], "app");
    assert.match(headers["host"], /^127\.0\.0\.1:\d+$/);
    assert.equal(headers["host"], new URL(stack.sim.url).host);
  });
});

Deno.test("credentials: missing, unknown and conflicting are 401 and never forwarded", async () => {
  await withStack(async (stack) => {
    const body = { model: "llama3.2", prompt: "x" };
    const cases: Record<string, string>[] = [
      {},
      bearer("not-a-key-0123456789"),
      { authorization: "Basic " + btoa("a:b") },
      { ...bearer(KEYS.app), "x-api-key": KEYS.admin },
    ];
    for (const headers of cases) {
      const response = await post(stack, "/api/generate", body, headers);
      assert.equal(response.status, 401, JSON.stringify(headers));
      assert.equal(typeof (await response.json()).error, "string");
    }
    const lower = await post(
      stack,
      "/api/generate",
      { ...body, stream: false },
      {
        authorization: `bEaReR ${KEYS.app}`,
      },
    );
    assert.equal(lower.status, 200);
    await lower.body?.cancel();
    const xApiKey = await post(stack, "/api/generate", {
      ...body,
      stream: false,
    }, {
      "x-api-key": KEYS.app,
    });
    assert.equal(xApiKey.status, 200);
    await xApiKey.body?.cancel();
    assert.equal(stack.sim.records.length, 2);
  });
});

Deno.test("paths that are not byte for byte a route are 404 and never forwarded", async () => {
  await withStack(async (stack) => {
    const paths = [
      "/api/chat/",
      "//api/chat",
      "/api//chat",
      "/api/%63hat",
      "/api/./chat",
      "/api/../api/chat",
      "/API/chat",
      "/api/Chat",
      "/api/nothing",
      "/v1/models/llama3.2/extra",
    ];
    for (const path of paths) {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: Number(new URL(stack.url).port),
      });
      const body = JSON.stringify({ model: "llama3.2", messages: [] });
      const request =
        `POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEYS.app}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
      await conn.write(new TextEncoder().encode(request));
      const answer = new TextDecoder().decode(
        (await new Response(conn.readable).arrayBuffer()) as ArrayBuffer,
      );
      assert.match(answer, /^HTTP\/1\.1 404/, path);
    }
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("account and internet routes are refused unless enabled", async () => {
  await withStack(async (stack) => {
    for (
      const path of ["/api/me", "/api/signout", "/api/experimental/web_search"]
    ) {
      const response = await post(stack, path, {}, bearer(KEYS.admin));
      assert.equal(response.status, 403, path);
      await response.body?.cancel();
    }
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("models are decided on the name Ollama resolves", async () => {
  await withStack(async (stack) => {
    const allowed = [
      "llama3.2",
      "LLAMA3.2",
      " llama3.2 ",
      "library/llama3.2:latest",
      "registry.ollama.ai/library/llama3.2",
      "llama3.2:latest:local",
    ];
    for (const model of allowed) {
      const response = await post(stack, "/api/generate", {
        model,
        prompt: "x",
        stream: false,
      });
      assert.equal(response.status, 200, model);
      await response.body?.cancel();
    }
    const denied = [
      "llama3.2:1b",
      "LLAMA3.2:1B",
      "library/llama3.2:1b",
      "llama3.2:1b:local",
      "qwen2.5:7b",
      "llama3.2:cloud",
      "gpt-oss:120b-cloud",
      "llama3.2@sha256:abc",
    ];
    const before = stack.sim.records.length;
    for (const model of denied) {
      const response = await post(stack, "/api/generate", {
        model,
        prompt: "x",
      });
      assert.ok(
        [400, 403].includes(response.status),
        `${model}: ${response.status}`,
      );
      await response.body?.cancel();
    }
    assert.equal(
      stack.sim.records.length,
      before,
      "no denied model reached Ollama",
    );
  });
});

Deno.test("JSON keys are read as Go reads them: case, folding, duplicates, types", async () => {
  await withStack(async (stack) => {
    const bodies = [
      // Ollama reads the last case variant: qwen.
      `{"model":"llama3.2","Model":"qwen2.5:7b","prompt":"x"}`,
      `{"model":"llama3.2","MODEL":"qwen2.5:7b","prompt":"x"}`,
      // Exact duplicates: Go keeps the last.
      `{"model":"llama3.2","model":"qwen2.5:7b","prompt":"x"}`,
      // Unicode folding of the key is not a way around: Kelvin sign in a key.
      `{"model":"llama3.2","prompt":"x","\\u006dodel":"qwen2.5:7b"}`,
      // Type confusion.
      `{"model":["llama3.2"],"prompt":"x"}`,
      `{"model":{"name":"llama3.2"},"prompt":"x"}`,
      `{"model":7,"prompt":"x"}`,
      // Not JSON, or more than one value.
      `{"model":"llama3.2","prompt":"x"} {"model":"qwen2.5:7b"}`,
      `{"model":"llama3.2",`,
      `["llama3.2"]`,
    ];
    for (const body of bodies) {
      const response = await post(stack, "/api/generate", body);
      assert.ok(
        [400, 403].includes(response.status),
        `${body}: ${response.status}`,
      );
      const error = await response.json();
      assert.equal(typeof error.error, "string");
    }
    assert.equal(stack.sim.records.length, 0);

    // The long s folds to s: `meſſages` is Ollama's `messages`, and the
    // conflicting `Model` decides the model.
    const folded = await post(
      stack,
      "/api/chat",
      `{"model":"qwen2.5:7b","MODEL":"llama3.2","meſſages":[{"role":"user","content":"hi"}],"stream":false}`,
    );
    assert.equal(folded.status, 400);
    await folded.body?.cancel();
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("compressed bodies are refused unless Ollama decodes them, then decided on decoded", async () => {
  await withStack(async (stack) => {
    const gzip = await post(stack, "/api/generate", "not really gzip", {
      ...bearer(KEYS.app),
      "content-encoding": "gzip",
    });
    assert.equal(gzip.status, 415);
    await gzip.body?.cancel();
    // zstd is decoded by Ollama on /v1 only; Butler decides on the decoded body.
    const denied = zstdCompressSync(
      JSON.stringify({ model: "qwen2.5:7b", messages: [] }),
    );
    const response = await fetch(stack.url + "/v1/chat/completions", {
      method: "POST",
      headers: { ...bearer(KEYS.app), "content-encoding": "zstd" },
      body: new Uint8Array(denied),
    });
    assert.equal(response.status, 403);
    const error = await response.json();
    assert.equal(typeof error.error.message, "string");
    const zstdNative = await post(stack, "/api/generate", "x", {
      ...bearer(KEYS.app),
      "content-encoding": "zstd",
    });
    assert.equal(zstdNative.status, 415);
    await zstdNative.body?.cancel();
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("errors come back in the dialect of the route", async () => {
  await withStack(async (stack) => {
    const native = await post(stack, "/api/chat", {
      model: "qwen2.5:7b",
      messages: [],
    });
    assert.equal(native.status, 403);
    assert.equal(typeof (await native.json()).error, "string");

    const openai = await post(stack, "/v1/chat/completions", {
      model: "qwen2.5:7b",
      messages: [],
    });
    const openaiBody = await openai.json();
    assert.equal(openai.status, 403);
    assert.equal(openaiBody.error.type, "permission_error");
    assert.equal(openaiBody.error.param, null);

    const anthropic = await post(stack, "/v1/messages", {
      model: "qwen2.5:7b",
      max_tokens: 5,
      messages: [],
    });
    const anthropicBody = await anthropic.json();
    assert.equal(anthropic.status, 403);
    assert.equal(anthropicBody.type, "error");
    assert.equal(anthropicBody.error.type, "permission_error");
    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("model management needs the permission and checks every model it names", async () => {
  await withStack(async (stack) => {
    const pull = await post(stack, "/api/pull", { model: "llama3.2" });
    assert.equal(pull.status, 403);
    await pull.body?.cancel();
    const copy = await post(stack, "/api/copy", {
      source: "llama3.2",
      destination: "qwen2.5:7b",
    });
    assert.equal(copy.status, 403);
    await copy.body?.cancel();
    assert.equal(stack.sim.records.length, 0);

    const adminCopy = await post(stack, "/api/copy", {
      source: "llama3.2",
      destination: "mine",
    }, bearer(KEYS.admin));
    assert.equal(adminCopy.status, 200);
    await adminCopy.body?.cancel();
    assert.deepEqual(stack.sim.records[0].acted?.models, [
      "registry.ollama.ai/library/llama3.2:latest",
      "registry.ollama.ai/library/mine:latest",
    ]);
  });
});

Deno.test("the first chunk arrives while Ollama generates; hanging up cancels it", async () => {
  const stack = await startStack(CONFIG, {
    sim: { chunkDelayMs: 200, chunks: 50 },
  });
  try {
    const response = await post(stack, "/api/chat", {
      model: "llama3.2",
      messages: [{ role: "user", content: "hello" }],
    });
    const reader = response.body!.getReader();
    const first = await reader.read();
    assert.equal(first.done, false);
    const line = new TextDecoder().decode(first.value).split("\n")[0];
    assert.equal(JSON.parse(line).done, false);
    await reader.cancel();
    // The simulator sees its stream cancelled.
    for (let i = 0; i < 100 && !stack.sim.records[0].cancelled; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(stack.sim.records[0].cancelled, true);
  } finally {
    await stack.close();
  }
});

Deno.test("upstream down is a 502 in the route's dialect; /healthz says 503", async () => {
  const stack = await startStack(CONFIG);
  await stack.sim.close();
  try {
    const response = await post(stack, "/v1/chat/completions", {
      model: "llama3.2",
      messages: [],
    });
    assert.equal(response.status, 502);
    assert.equal(typeof (await response.json()).error.message, "string");
    const health = await fetch(stack.url + "/healthz");
    assert.equal(health.status, 503);
    const body = await health.json();
    assert.equal(JSON.stringify(body).includes("app"), false);
  } finally {
    await stack.butler.shutdown();
  }
});

Deno.test("listings show only the models the client may use", async () => {
  await withStack(async (stack) => {
    const tags = await (await fetch(stack.url + "/api/tags", {
      headers: bearer(KEYS.app),
    })).json();
    const names = tags.models.map((m: { name: string }) => m.name).sort();
    assert.ok(names.length > 0);
    for (const name of names) {
      assert.match(name, /^(llama3\.2:latest|nomic-embed-text:latest)$/);
    }
    const v1 = await (await fetch(stack.url + "/v1/models", {
      headers: bearer(KEYS.app),
    })).json();
    for (const model of v1.data) {
      assert.match(model.id, /^(llama3\.2:latest|nomic-embed-text:latest)$/);
    }
    const show = await post(stack, "/api/show", { model: "qwen2.5:7b" });
    assert.equal(show.status, 404);
    await show.body?.cancel();
    const detail = await fetch(stack.url + "/v1/models/qwen2.5:7b", {
      headers: bearer(KEYS.app),
    });
    assert.equal(detail.status, 404);
    await detail.body?.cancel();
  });
});

Deno.test("log lines are JSON and never carry a key or a prompt", async () => {
  await withStack(async (stack) => {
    const response = await post(stack, "/api/chat", {
      model: "llama3.2",
      messages: [{ role: "user", content: "my secret prompt" }],
    });
    await response.text();
    const denied = await post(stack, "/api/chat", {
      model: "qwen2.5:7b",
      messages: [],
    });
    await denied.body?.cancel();
    await new Promise((resolve) => setTimeout(resolve, 50));
    const text = JSON.stringify(stack.logs);
    assert.equal(text.includes(KEYS.app), false);
    assert.equal(text.includes("my secret prompt"), false);
    const done = stack.logs.find((l) =>
      l.msg === "response" && l.route === "/api/chat"
    );
    assert.equal(done?.client, "app");
    assert.equal(done?.model, "llama3.2:latest");
    assert.equal(done?.status, 200);
    assert.equal(typeof done?.duration_ms, "number");
    const refusal = stack.logs.find((l) =>
      l.level === "warn" && l.reason === "model_denied"
    );
    assert.equal(refusal?.client, "app");
  });
});

Deno.test("log_prompts: true logs the texts sent to the model, and only then", async () => {
  const stack = await startStack(`log_prompts: true\n${CONFIG}`);
  try {
    const response = await post(stack, "/api/chat", {
      model: "llama3.2",
      messages: [{ role: "user", content: "audit me" }],
      stream: false,
    });
    await response.body?.cancel();
    const line = stack.logs.find((l) => l.msg === "prompts");
    assert.deepEqual(line?.prompts, ["audit me"]);
    assert.equal(line?.client, "app");
    assert.equal(JSON.stringify(stack.logs).includes(KEYS.app), false);
  } finally {
    await stack.close();
  }
});

Deno.test("a made-up tag Ollama does not have never becomes a metric label", async () => {
  await withStack(async (stack) => {
    for (let i = 0; i < 3; i++) {
      const response = await post(stack, "/api/show", {
        model: `llama3.2:made-up-${i}`,
      });
      assert.equal(response.status, 404);
      await response.body?.cancel();
    }
    assert.equal(stack.sim.records.length, 3, "the tag passed the rules");
    await new Promise((resolve) => setTimeout(resolve, 20));
    const metrics = await (await fetch(stack.url + "/metrics")).text();
    assert.equal(metrics.includes("made-up"), false);
    assert.match(
      metrics,
      /butler_requests_total\{[^}]*model="-"[^}]*status="404"/,
    );
  });
});
