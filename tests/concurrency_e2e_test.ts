/**
 * `max_concurrent` and `global_max_concurrent` over real sockets: the slot
 * is taken before forwarding, a streamed answer holds it until its last byte
 * or until the client hangs up, a refusal is a 429 with `Retry-After` that
 * never reaches Ollama, and one client's long stream never holds up another
 * client.
 */

import assert from "node:assert/strict";
import { bearer, KEYS, type Stack, withStackFor } from "./support/harness.ts";
import type { SimOptions } from "./sim/ollama_sim.ts";

const CONFIG = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2"]
    max_concurrent: 2
  - name: other
    key: ${KEYS.limited}
    allow_models: ["llama3.2"]
`;

function withStack(
  config: string,
  sim: SimOptions,
  fn: (stack: Stack) => Promise<void>,
) {
  return withStackFor(config, fn, { sim });
}

function generate(stack: Stack, key: string, stream = false) {
  return fetch(stack.url + "/api/generate", {
    method: "POST",
    headers: bearer(key),
    body: JSON.stringify({ model: "llama3.2", prompt: "hi", stream }),
  });
}

/** Opens a streamed answer and reads its first chunk. */
async function openStream(stack: Stack, key: string) {
  const response = await generate(stack, key, true);
  assert.equal(response.status, 200);
  const reader = response.body!.getReader();
  const first = await reader.read();
  assert.equal(first.done, false);
  return reader;
}

async function drain(reader: ReadableStreamDefaultReader<Uint8Array>) {
  while (!(await reader.read()).done) {
    // read to the end
  }
}

/** Retries `generate` until it passes; bounded in count and time. */
async function passesSoon(stack: Stack, key: string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const response = await generate(stack, key);
    await response.body?.cancel();
    if (response.status === 200) return;
    assert.equal(response.status, 429);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.fail("the slot was never released");
}

Deno.test("fifty simultaneous first requests from a client limited to 2 put exactly 2 upstream", async () => {
  await withStack(CONFIG, { headerDelayMs: 1000 }, async (stack) => {
    const responses = await Promise.all(
      Array.from({ length: 50 }, () => generate(stack, KEYS.app)),
    );
    const statuses = responses.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 2);
    assert.equal(statuses.filter((s) => s === 429).length, 48);
    for (const response of responses) {
      if (response.status === 429) {
        assert.match(response.headers.get("retry-after")!, /^[1-9]\d*$/);
        assert.match((await response.json()).error, /too many requests/);
      } else {
        await response.body?.cancel();
      }
    }
    assert.equal(stack.sim.records.length, 2);
  });
});

Deno.test("a refusal is in the route's dialect", async () => {
  await withStack(CONFIG, { chunkDelayMs: 50, chunks: 40 }, async (stack) => {
    const streams = [
      await openStream(stack, KEYS.app),
      await openStream(stack, KEYS.app),
    ];
    const openai = await fetch(stack.url + "/v1/chat/completions", {
      method: "POST",
      headers: bearer(KEYS.app),
      body: JSON.stringify({ model: "llama3.2", messages: [] }),
    });
    assert.equal(openai.status, 429);
    assert.equal((await openai.json()).error.type, "rate_limit_error");
    assert.ok(openai.headers.has("retry-after"));
    const anthropic = await fetch(stack.url + "/v1/messages", {
      method: "POST",
      headers: bearer(KEYS.app),
      body: JSON.stringify({ model: "llama3.2", max_tokens: 5, messages: [] }),
    });
    assert.equal(anthropic.status, 429);
    assert.equal((await anthropic.json()).error.type, "rate_limit_error");
    for (const reader of streams) await reader.cancel();
    assert.equal(stack.sim.records.length, 2);
  });
});

Deno.test("one client's long streams never hold up another client", async () => {
  await withStack(CONFIG, { chunkDelayMs: 50, chunks: 40 }, async (stack) => {
    const streams = [
      await openStream(stack, KEYS.app),
      await openStream(stack, KEYS.app),
    ];
    const blocked = await generate(stack, KEYS.app);
    assert.equal(blocked.status, 429);
    await blocked.body?.cancel();

    // The other client is answered in full while both streams are open.
    let streamsDone = false;
    const finished = Promise.all(streams.map(drain)).then(() => {
      streamsDone = true;
    });
    for (let i = 0; i < 5; i++) {
      const response = await generate(stack, KEYS.limited);
      assert.equal(response.status, 200);
      assert.equal((await response.json()).done, true);
    }
    assert.equal(streamsDone, false);
    await finished;

    // Streams that ended gave their slots back.
    const after = await generate(stack, KEYS.app);
    assert.equal(after.status, 200);
    await after.body?.cancel();
  });
});

Deno.test("a client hanging up mid-stream releases its slot", async () => {
  await withStack(CONFIG, { chunkDelayMs: 50, chunks: 400 }, async (stack) => {
    const streams = [
      await openStream(stack, KEYS.app),
      await openStream(stack, KEYS.app),
    ];
    const blocked = await generate(stack, KEYS.app);
    assert.equal(blocked.status, 429);
    await blocked.body?.cancel();

    for (const reader of streams) await reader.cancel();
    await passesSoon(stack, KEYS.app);
    assert.equal(stack.sim.records.length, 3);
    assert.equal(stack.sim.records[0].cancelled, true);
    assert.equal(stack.sim.records[1].cancelled, true);
  });
});

Deno.test("global_max_concurrent counts every client together", async () => {
  const config = `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
global_max_concurrent: 2
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2"]
  - name: other
    key: ${KEYS.limited}
    allow_models: ["llama3.2"]
`;
  await withStack(config, { chunkDelayMs: 50, chunks: 400 }, async (stack) => {
    const first = await openStream(stack, KEYS.app);
    const second = await openStream(stack, KEYS.limited);
    for (const key of [KEYS.app, KEYS.limited]) {
      const refused = await generate(stack, key);
      assert.equal(refused.status, 429);
      assert.ok(refused.headers.has("retry-after"));
      await refused.body?.cancel();
    }
    assert.equal(stack.sim.records.length, 2);

    await first.cancel();
    await passesSoon(stack, KEYS.limited);
    await second.cancel();
  });
});
