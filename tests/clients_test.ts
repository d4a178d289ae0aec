/**
 * Real clients no one here wrote, through Butler to the Ollama simulator:
 * the `ollama`, `openai` and `@anthropic-ai/sdk` npm packages, each sending
 * its key its own way. The client must see the streamed tokens, the
 * simulator's record must show what Ollama acted on, and a refusal must
 * reach the client as an error carrying Butler's message.
 */

import assert from "node:assert/strict";
// Dev-only clients, pinned here rather than in deno.json's import map so
// that they can never become runtime dependencies of Butler.
// deno-lint-ignore no-import-prefix
import { Ollama } from "npm:ollama@0.6.4";
// deno-lint-ignore no-import-prefix
import OpenAI from "npm:openai@7.55.0";
// deno-lint-ignore no-import-prefix
import Anthropic from "npm:@anthropic-ai/sdk@1.10.0";
import { KEYS, type Stack, withStackFor } from "./support/harness.ts";

const CONFIG = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2", "nomic-embed-text"]
    deny_models: ["llama3.2:1b"]
`;

const LLAMA = "registry.ollama.ai/library/llama3.2:latest";
const EMBED = "registry.ollama.ai/library/nomic-embed-text:latest";
const DENIED_MESSAGE = "model 'qwen2.5:7b' is not allowed for this client";
/** The simulator answers with these tokens, one per chunk (chunks: 5). */
const ANSWER = "The quick brown fox jumps";

function withStack(fn: (stack: Stack) => Promise<void>) {
  return withStackFor(CONFIG, fn, { sim: { chunks: 5 } });
}

/**
 * What ollama-js throws for a non-2xx answer: an Error named
 * "ResponseError" (the class is not exported) with the body's `error`
 * string and the HTTP status.
 */
interface OllamaResponseError extends Error {
  error: string;
  status_code: number;
}

function assertOllamaError(
  value: unknown,
): asserts value is OllamaResponseError {
  assert.ok(value instanceof Error, String(value));
  assert.equal(value.name, "ResponseError");
}

/** Runs `fn`, which must throw; returns what it threw. */
async function thrown(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (error) {
    return error;
  }
  assert.fail("expected the client to throw");
}

function ollamaClient(stack: Stack, key: string = KEYS.app): Ollama {
  return new Ollama({
    host: stack.url,
    headers: { authorization: `Bearer ${key}` },
  });
}

function openaiClient(stack: Stack, key: string = KEYS.app): OpenAI {
  return new OpenAI({ baseURL: `${stack.url}/v1`, apiKey: key, maxRetries: 0 });
}

function anthropicClient(stack: Stack, key: string = KEYS.app): Anthropic {
  return new Anthropic({ baseURL: stack.url, apiKey: key, maxRetries: 0 });
}

Deno.test("ollama client: streamed chat arrives chunk by chunk", async () => {
  await withStack(async (stack) => {
    const stream = await ollamaClient(stack).chat({
      model: "llama3.2",
      messages: [{ role: "user", content: "tell me about foxes" }],
      stream: true,
    });
    const parts: string[] = [];
    let done = false;
    for await (const part of stream) {
      parts.push(part.message.content);
      done = part.done;
    }
    assert.equal(parts.join(""), ANSWER);
    assert.ok(parts.length >= 5, `got ${parts.length} chunks`);
    assert.equal(done, true);

    assert.equal(stack.sim.records.length, 1);
    const record = stack.sim.records[0];
    assert.equal(record.path, "/api/chat");
    assert.equal(record.headers["authorization"], undefined);
    assert.deepEqual(record.acted?.models, [LLAMA]);
    assert.deepEqual(record.acted?.texts, ["tell me about foxes"]);
    assert.equal(record.acted?.stream, true);
  });
});

Deno.test("ollama client: generate, embed and list", async () => {
  await withStack(async (stack) => {
    const ollama = ollamaClient(stack);

    const generated = await ollama.generate({
      model: "llama3.2",
      prompt: "once upon a time",
    });
    assert.equal(generated.response, ANSWER);
    assert.equal(generated.done, true);

    const embedded = await ollama.embed({
      model: "nomic-embed-text",
      input: ["first", "second"],
    });
    assert.equal(embedded.embeddings.length, 2);
    assert.ok(embedded.embeddings[0].length > 0);

    // The listing shows only the models this client may use.
    const listed = await ollama.list();
    const names = listed.models.map((m) => m.name).sort();
    assert.deepEqual(names, ["llama3.2:latest", "nomic-embed-text:latest"]);

    const acted = stack.sim.records.map((r) => [r.path, r.acted?.models]);
    assert.deepEqual(acted, [
      ["/api/generate", [LLAMA]],
      ["/api/embed", [EMBED]],
      ["/api/tags", []],
    ]);
    assert.deepEqual(stack.sim.records[0].acted?.texts, ["once upon a time"]);
    assert.deepEqual(stack.sim.records[1].acted?.texts, ["first", "second"]);
  });
});

Deno.test("ollama client: a refusal is a ResponseError with Butler's message", async () => {
  await withStack(async (stack) => {
    const denied = await thrown(() =>
      ollamaClient(stack).chat({
        model: "qwen2.5:7b",
        messages: [{ role: "user", content: "hi" }],
        stream: true,
      })
    );
    assertOllamaError(denied);
    assert.equal(denied.status_code, 403);
    assert.equal(denied.error, DENIED_MESSAGE);

    const unknown = await thrown(() =>
      ollamaClient(stack, "not-a-key-0123456789").generate({
        model: "llama3.2",
        prompt: "hi",
      })
    );
    assertOllamaError(unknown);
    assert.equal(unknown.status_code, 401);
    assert.equal(unknown.error, "unauthorized");

    assert.equal(stack.sim.records.length, 0);
  });
});

Deno.test("openai client: streamed chat completion", async () => {
  await withStack(async (stack) => {
    const stream = await openaiClient(stack).chat.completions.create({
      model: "llama3.2",
      messages: [
        { role: "system", content: "be brief" },
        { role: "user", content: "tell me about foxes" },
      ],
      stream: true,
      stream_options: { include_usage: true },
    });
    const parts: string[] = [];
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta?.content;
      if (delta) parts.push(delta);
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(parts.join(""), ANSWER);
    assert.ok(parts.length >= 5, `got ${parts.length} chunks`);
    assert.equal(usage?.completion_tokens, 5);

    assert.equal(stack.sim.records.length, 1);
    const record = stack.sim.records[0];
    assert.equal(record.path, "/v1/chat/completions");
    assert.equal(record.headers["authorization"], undefined);
    assert.deepEqual(record.acted?.models, [LLAMA]);
    assert.deepEqual(record.acted?.texts, ["be brief", "tell me about foxes"]);
    assert.equal(record.acted?.stream, true);
  });
});

Deno.test("openai client: embeddings and models list", async () => {
  await withStack(async (stack) => {
    const openai = openaiClient(stack);

    const embedded = await openai.embeddings.create({
      model: "nomic-embed-text",
      input: "a sentence",
    });
    assert.equal(embedded.data.length, 1);
    assert.ok(embedded.data[0].embedding.length > 0);

    const ids: string[] = [];
    for await (const model of openai.models.list()) ids.push(model.id);
    assert.deepEqual(ids.sort(), [
      "llama3.2:latest",
      "nomic-embed-text:latest",
    ]);

    const acted = stack.sim.records.map((r) => [r.path, r.acted?.models]);
    assert.deepEqual(acted, [
      ["/v1/embeddings", [EMBED]],
      ["/v1/models", []],
    ]);
    assert.deepEqual(stack.sim.records[0].acted?.texts, ["a sentence"]);
  });
});

Deno.test("openai client: a refusal is an APIError with Butler's message", async () => {
  await withStack(async (stack) => {
    const denied = await thrown(() =>
      openaiClient(stack).chat.completions.create({
        model: "qwen2.5:7b",
        messages: [{ role: "user", content: "hi" }],
        stream: true,
      })
    );
    assert.ok(denied instanceof OpenAI.PermissionDeniedError, String(denied));
    assert.equal(denied.status, 403);
    assert.equal(denied.type, "permission_error");
    assert.equal(denied.message, `403 ${DENIED_MESSAGE}`);

    const deniedEmbed = await thrown(() =>
      openaiClient(stack).embeddings.create({
        model: "llama3.2:1b",
        input: "x",
      })
    );
    assert.ok(deniedEmbed instanceof OpenAI.PermissionDeniedError);
    assert.match(deniedEmbed.message, /llama3\.2:1b.*not allowed/);

    const unknown = await thrown(() =>
      openaiClient(stack, "not-a-key-0123456789").models.list()
    );
    assert.ok(unknown instanceof OpenAI.AuthenticationError, String(unknown));
    assert.equal(unknown.status, 401);
    assert.equal(unknown.message, "401 unauthorized");
    assert.equal(unknown.type, "authentication_error");

    assert.equal(stack.sim.records.length, 0);
  });
});

async function collectAnthropicText(client: Anthropic): Promise<string[]> {
  const stream = await client.messages.create({
    model: "llama3.2",
    max_tokens: 64,
    system: "be brief",
    messages: [{ role: "user", content: "tell me about foxes" }],
    stream: true,
  });
  const parts: string[] = [];
  for await (const event of stream) {
    if (
      event.type === "content_block_delta" && event.delta.type === "text_delta"
    ) {
      parts.push(event.delta.text);
    }
  }
  return parts;
}

Deno.test("anthropic client: streamed messages with apiKey (Authorization: Bearer)", async () => {
  await withStack(async (stack) => {
    const parts = await collectAnthropicText(anthropicClient(stack));
    assert.equal(parts.join(""), ANSWER);
    assert.ok(parts.length >= 5, `got ${parts.length} chunks`);

    assert.equal(stack.sim.records.length, 1);
    const record = stack.sim.records[0];
    assert.equal(record.path, "/v1/messages");
    assert.equal(record.headers["authorization"], undefined);
    assert.equal(record.headers["x-api-key"], undefined);
    assert.deepEqual(record.acted?.models, [LLAMA]);
    assert.deepEqual(record.acted?.texts, ["be brief", "tell me about foxes"]);
    assert.equal(record.acted?.maxTokens, 64);
  });
});

Deno.test("anthropic client: streamed messages with the key in x-api-key", async () => {
  await withStack(async (stack) => {
    const sent: Headers[] = [];
    const client = new Anthropic({
      baseURL: stack.url,
      apiKey: null,
      authToken: null,
      defaultHeaders: { "x-api-key": KEYS.app },
      maxRetries: 0,
      fetch: (input, init) => {
        sent.push(new Headers(init?.headers));
        return fetch(input, init);
      },
    });
    const parts = await collectAnthropicText(client);
    assert.equal(parts.join(""), ANSWER);

    // The SDK really sent x-api-key and no Authorization header.
    assert.equal(sent.length, 1);
    assert.equal(sent[0].get("x-api-key"), KEYS.app);
    assert.equal(sent[0].get("authorization"), null);

    assert.equal(stack.sim.records.length, 1);
    assert.equal(stack.sim.records[0].headers["x-api-key"], undefined);
    assert.deepEqual(stack.sim.records[0].acted?.models, [LLAMA]);
  });
});

Deno.test("anthropic client: a refusal is an APIError with Butler's message", async () => {
  await withStack(async (stack) => {
    const denied = await thrown(() =>
      anthropicClient(stack).messages.create({
        model: "qwen2.5:7b",
        max_tokens: 16,
        messages: [{ role: "user", content: "hi" }],
        stream: true,
      })
    );
    assert.ok(
      denied instanceof Anthropic.PermissionDeniedError,
      String(denied),
    );
    assert.equal(denied.status, 403);
    assert.equal(denied.type, "permission_error");
    assert.equal(denied.apiMessage, DENIED_MESSAGE);
    assert.deepEqual(denied.error, {
      type: "error",
      error: { type: "permission_error", message: DENIED_MESSAGE },
    });

    const unknown = await thrown(() =>
      anthropicClient(stack, "not-a-key-0123456789").messages.create({
        model: "llama3.2",
        max_tokens: 16,
        messages: [{ role: "user", content: "hi" }],
      })
    );
    assert.ok(
      unknown instanceof Anthropic.AuthenticationError,
      String(unknown),
    );
    assert.equal(unknown.status, 401);
    assert.equal(unknown.apiMessage, "unauthorized");
    assert.equal(unknown.type, "authentication_error");

    assert.equal(stack.sim.records.length, 0);
  });
});
