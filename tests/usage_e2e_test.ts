/**
 * Token accounting over real sockets: the counts Ollama reports in every
 * dialect, streamed and not, reach the response log line, the metrics and
 * the budgets; OpenAI-style streams get usage asked for on the client's
 * behalf and taken back out; a client that hangs up is charged for what
 * streamed.
 */

import assert from "node:assert/strict";
import { bearer, KEYS, type Stack, withStackFor } from "./support/harness.ts";
import { countPromptTokens } from "./sim/streams.ts";
import { startButler } from "../src/serve.ts";
import { Logger } from "../src/observe/log.ts";
import { writeConfig } from "./support/harness.ts";

const CONFIG = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2"]
    max_tokens_per_day: 100000
  - name: plain
    key: ${KEYS.admin}
    allow_models: ["llama3.2"]
`;

function withStack(
  fn: (stack: Stack) => Promise<void>,
  sim: { chunks?: number; chunkDelayMs?: number } = {},
) {
  return withStackFor(CONFIG, fn, { sim });
}

function post(stack: Stack, path: string, body: unknown) {
  return fetch(stack.url + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...bearer(KEYS.app) },
    body: JSON.stringify(body),
  });
}

/** Polls `find` until it returns a value (at most 100 times, 20 ms apart). */
async function eventually<T>(find: () => T | undefined): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const found = find();
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error("condition not reached within 2 s");
}

function responseLines(stack: Stack) {
  return stack.logs.filter((line) => line.msg === "response");
}

async function metricValue(stack: Stack, series: string): Promise<number> {
  const text = await (await fetch(stack.url + "/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

const PROMPT = "count these tokens please";

/** A request per dialect; `stream` is set explicitly in both cases. */
const DIALECTS: Array<{ path: string; body: Record<string, unknown> }> = [
  { path: "/api/generate", body: { model: "llama3.2", prompt: PROMPT } },
  {
    path: "/api/chat",
    body: { model: "llama3.2", messages: [{ role: "user", content: PROMPT }] },
  },
  {
    path: "/v1/chat/completions",
    body: { model: "llama3.2", messages: [{ role: "user", content: PROMPT }] },
  },
  { path: "/v1/completions", body: { model: "llama3.2", prompt: PROMPT } },
  {
    path: "/v1/messages",
    body: {
      model: "llama3.2",
      max_tokens: 50,
      messages: [{ role: "user", content: PROMPT }],
    },
  },
  { path: "/v1/responses", body: { model: "llama3.2", input: PROMPT } },
];

Deno.test("every dialect, streamed and not: counts reach the log line and the metrics", async () => {
  await withStack(async (stack) => {
    const promptTokens = countPromptTokens([PROMPT]);
    let expectedGenerated = 0;
    for (const { path, body } of DIALECTS) {
      for (const stream of [true, false]) {
        const label = `${path} stream=${stream}`;
        const before = responseLines(stack).length;
        const response = await post(stack, path, { ...body, stream });
        assert.equal(response.status, 200, label);
        await response.text();
        const line = await eventually(() => responseLines(stack)[before]);
        assert.equal(line.route, path, label);
        assert.equal(line.prompt_tokens, promptTokens, label);
        assert.equal(line.generated_tokens, 5, label);
        assert.equal(line.end, "complete", label);
        expectedGenerated += 5;
      }
    }
    const series = 'butler_tokens_total{client="app",user="-",auth="api_key",' +
      'model="llama3.2:latest",kind="generated"}';
    assert.equal(await metricValue(stack, series), expectedGenerated);
    const prompt = series.replace("generated", "prompt");
    assert.equal(
      await metricValue(stack, prompt),
      promptTokens * DIALECTS.length * 2,
    );
  }, { chunks: 5, chunkDelayMs: 1 });
});

/** A streamed body with its random ids and timestamps made constant. */
function normalized(text: string): string {
  return text
    .replace(/"(chatcmpl|cmpl)-[0-9a-z]+"/g, '"$1-X"')
    .replace(/"created":\d+/g, '"created":0');
}

Deno.test("OpenAI streams: usage asked for the client is read, then removed", async () => {
  await withStack(async (stack) => {
    for (const path of ["/v1/chat/completions", "/v1/completions"]) {
      const body = path === "/v1/completions"
        ? { model: "llama3.2", prompt: PROMPT, stream: true }
        : {
          model: "llama3.2",
          messages: [{ role: "user", content: PROMPT }],
          stream: true,
        };

      // What Ollama itself sends a client that did not ask.
      const direct = await fetch(stack.sim.url + path, {
        method: "POST",
        body: JSON.stringify(body),
      });
      const directText = await direct.text();
      assert.doesNotMatch(directText, /usage/);
      stack.sim.clear();

      const before = responseLines(stack).length;
      const response = await post(stack, path, body);
      const text = await response.text();
      assert.equal(normalized(text), normalized(directText), path);

      // Ollama was asked for usage, and Butler learned the exact count.
      const forwarded = JSON.parse(
        new TextDecoder().decode(stack.sim.records[0].rawBody),
      );
      assert.deepEqual(forwarded.stream_options, { include_usage: true });
      const line = await eventually(() => responseLines(stack)[before]);
      assert.equal(line.generated_tokens, 5);
      assert.equal(line.prompt_tokens, countPromptTokens([PROMPT]));
      stack.sim.clear();
    }
  }, { chunks: 5, chunkDelayMs: 1 });
});

Deno.test("OpenAI streams: a client that asked for usage gets it untouched", async () => {
  await withStack(async (stack) => {
    const body = JSON.stringify({
      model: "llama3.2",
      messages: [{ role: "user", content: PROMPT }],
      stream: true,
      stream_options: { include_usage: true },
    });
    // A client without a budget: Butler has no reason to touch the body.
    const response = await fetch(stack.url + "/v1/chat/completions", {
      method: "POST",
      headers: bearer(KEYS.admin),
      body,
    });
    const events = (await response.text()).split("\n\n").filter((e) => e);
    const usage = JSON.parse(events.at(-2)!.slice("data: ".length));
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.completion_tokens, 5);
    // The body reached Ollama byte for byte.
    assert.equal(new TextDecoder().decode(stack.sim.records[0].rawBody), body);
  }, { chunks: 5, chunkDelayMs: 1 });
});

/**
 * An upstream that answers /v1/completions exactly as Ollama's OpenAI
 * middleware does: with `include_usage`, zeros on every chunk and a usage
 * chunk before `[DONE]`. Ids and timestamps are fixed so bytes compare.
 */
function startOllamaLikeCompletions() {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: () => {},
  }, async (request) => {
    const body = await request.json();
    const asked = body.stream_options?.include_usage === true;
    const zero = asked
      ? ',"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}'
      : "";
    const head = '{"id":"cmpl-42","object":"text_completion","created":7,' +
      '"choices":[';
    const tail = '],"model":"llama3.2","system_fingerprint":"fp_ollama"';
    const frames = ["The", " fox", ""].map((text, i) =>
      `data: ${head}{"text":"${text}","index":0,"finish_reason":${
        i === 2 ? '"stop"' : "null"
      }}${tail}${zero}}\n\n`
    );
    if (asked) {
      frames.push(
        `data: ${head}${tail},"usage":{"prompt_tokens":4,` +
          `"completion_tokens":2,"total_tokens":6}}\n\n`,
      );
    }
    frames.push("data: [DONE]\n\n");
    return new Response(
      ReadableStream.from(frames).pipeThrough(new TextEncoderStream()),
      { headers: { "content-type": "text/event-stream" } },
    );
  });
  return server;
}

Deno.test("/v1/completions: Ollama's zero usage on each chunk is removed too", async () => {
  const upstream = startOllamaLikeCompletions();
  const upstreamUrl = `http://127.0.0.1:${upstream.addr.port}`;
  const configPath = await writeConfig(
    CONFIG.replace("{{UPSTREAM}}", upstreamUrl),
  );
  const logs: Record<string, unknown>[] = [];
  const butler = await startButler({
    configPath,
    port: 0,
    log: new Logger({ sink: (line) => logs.push(JSON.parse(line)) }),
  });
  try {
    const body = JSON.stringify({
      model: "llama3.2",
      prompt: "x",
      stream: true,
    });
    const direct = await (await fetch(upstreamUrl + "/v1/completions", {
      method: "POST",
      body,
    })).text();
    const through = await (await fetch(
      `http://127.0.0.1:${butler.addr.port}/v1/completions`,
      { method: "POST", headers: bearer(KEYS.app), body },
    )).text();
    assert.equal(through, direct);
    const line = await eventually(() => logs.find((l) => l.msg === "response"));
    assert.equal(line.generated_tokens, 2);
    assert.equal(line.prompt_tokens, 4);
  } finally {
    await butler.shutdown();
    await upstream.shutdown();
  }
});

Deno.test("a client that hangs up is charged for what streamed", async () => {
  await withStack(async (stack) => {
    const response = await post(stack, "/api/chat", {
      model: "llama3.2",
      messages: [{ role: "user", content: PROMPT }],
    });
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let received = "";
    while (received.split("\n").filter((l) => l).length < 3) {
      const { value } = await reader.read();
      received += decoder.decode(value);
    }
    await reader.cancel();

    const line = await eventually(() => responseLines(stack)[0]);
    assert.equal(line.end, "client_closed");
    const charged = line.generated_tokens as number;
    assert.ok(charged >= 3 && charged < 50, `charged ${charged}`);
    assert.equal(line.prompt_tokens, undefined);
    await eventually(() => stack.sim.records[0].cancelled || undefined);

    const series = 'butler_tokens_total{client="app",user="-",' +
      'auth="api_key",model="llama3.2:latest",kind="generated"}';
    assert.equal(await metricValue(stack, series), charged);
  }, { chunks: 50, chunkDelayMs: 30 });
});
