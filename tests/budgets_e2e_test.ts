/**
 * Daily token budgets over real sockets: the generation cap lowered to what
 * is left, exhaustion answered with 429 before anything reaches Ollama,
 * reservations that keep simultaneous requests from overspending, and usage
 * that survives a restart through the state file.
 */

import assert from "node:assert/strict";
import {
  bearer,
  KEYS,
  type Stack,
  startStack,
  writeConfig,
} from "./support/harness.ts";
import { startButler } from "../src/serve.ts";
import { Logger } from "../src/observe/log.ts";
import { StateFileError } from "../src/policy/budget_store.ts";
import { startOllamaSim } from "./sim/ollama_sim.ts";

function config(extra = "", budget = 12): string {
  return `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
${extra}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2", "nomic-embed-text"]
    max_tokens_per_day: ${budget}
  - name: capped
    key: ${KEYS.limited}
    allow_models: ["llama3.2"]
    max_predict: 4
    max_tokens_per_day: 100
`;
}

function chat(stack: Stack, options: { key?: string; numPredict?: number }) {
  return fetch(stack.url + "/api/chat", {
    method: "POST",
    headers: bearer(options.key ?? KEYS.app),
    body: JSON.stringify({
      model: "llama3.2",
      messages: [{ role: "user", content: "hi" }],
      stream: false,
      ...(options.numPredict === undefined
        ? {}
        : { options: { num_predict: options.numPredict } }),
    }),
  });
}

async function eventually<T>(find: () => T | undefined): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const found = find();
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error("condition not reached within 2 s");
}

/** Waits until `count` response lines were logged (accounting is done). */
function accounted(stack: Stack, count: number) {
  return eventually(() =>
    stack.logs.filter((l) => l.msg === "response").length >= count
      ? true
      : undefined
  );
}

Deno.test("the cap follows the budget down, then 429 until midnight", async () => {
  const stack = await startStack(config(), { sim: { chunks: 5 } });
  try {
    // 12 left: the request may generate 12, generates 5.
    const expected = [12, 7, 2];
    for (const [i, cap] of expected.entries()) {
      const response = await chat(stack, {});
      assert.equal(response.status, 200);
      const body = await response.json();
      assert.equal(body.eval_count, Math.min(cap, 5));
      assert.equal(stack.sim.records[i].acted?.numPredict, cap);
      await accounted(stack, i + 1);
    }

    // Spent: refused in every dialect, and nothing reaches Ollama.
    const refused = await chat(stack, {});
    assert.equal(refused.status, 429);
    const retryAfter = Number(refused.headers.get("retry-after"));
    assert.ok(retryAfter >= 1 && retryAfter <= 86_400, String(retryAfter));
    assert.match((await refused.json()).error, /daily token budget of 12/);
    const openai = await fetch(stack.url + "/v1/chat/completions", {
      method: "POST",
      headers: bearer(KEYS.app),
      body: JSON.stringify({ model: "llama3.2", messages: [] }),
    });
    assert.equal(openai.status, 429);
    assert.equal(typeof (await openai.json()).error.message, "string");
    assert.equal(stack.sim.records.length, 3);
    const warn = stack.logs.find((l) => l.reason === "token_budget_spent");
    assert.equal(warn?.budget, "client:app");

    // Embeddings generate no tokens: a spent budget does not stop them.
    const embed = await fetch(stack.url + "/api/embed", {
      method: "POST",
      headers: bearer(KEYS.app),
      body: JSON.stringify({ model: "nomic-embed-text", input: "x" }),
    });
    assert.equal(embed.status, 200);
    await embed.body?.cancel();
  } finally {
    await stack.close();
  }
});

Deno.test("max_predict and the budget: the smaller one is the cap", async () => {
  const stack = await startStack(config(), { sim: { chunks: 5 } });
  try {
    const response = await chat(stack, { key: KEYS.limited });
    assert.equal(response.status, 200);
    await response.body?.cancel();
    assert.equal(stack.sim.records[0].acted?.numPredict, 4);

    // A smaller limit the client asked for is kept.
    const small = await chat(stack, { key: KEYS.limited, numPredict: 2 });
    await small.body?.cancel();
    assert.equal(stack.sim.records[1].acted?.numPredict, 2);

    // On OpenAI routes max_tokens carries the cap.
    const openai = await fetch(stack.url + "/v1/chat/completions", {
      method: "POST",
      headers: bearer(KEYS.app),
      body: JSON.stringify({
        model: "llama3.2",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 1000,
      }),
    });
    assert.equal(openai.status, 200);
    await openai.body?.cancel();
    assert.equal(stack.sim.records[2].acted?.maxTokens, 12);
  } finally {
    await stack.close();
  }
});

Deno.test("simultaneous requests cannot together overspend", async () => {
  const stack = await startStack(config("", 10), {
    sim: { chunks: 4, chunkDelayMs: 20 },
  });
  try {
    // Six at once, each asking for 4: 4 + 4 + 2 fit in 10; the rest must
    // wait for the reservations to settle.
    const responses = await Promise.all(
      Array.from({ length: 6 }, () => chat(stack, { numPredict: 4 })),
    );
    const statuses = responses.map((r) => r.status);
    await Promise.all(responses.map((r) => r.body?.cancel()));
    assert.equal(statuses.filter((s) => s === 200).length, 3);
    const refused = responses.filter((r) => r.status === 429);
    assert.equal(refused.length, 3);
    for (const response of refused) {
      assert.equal(response.headers.get("retry-after"), "1");
    }
    const granted = stack.sim.records.map((r) => r.acted?.numPredict ?? 0);
    assert.deepEqual(granted.sort(), [2, 4, 4]);
    assert.ok(granted.reduce((a, b) => a + b) <= 10);
    assert.equal(
      stack.logs.filter((l) => l.reason === "token_budget_reserved").length,
      3,
    );

    // Settled to what was generated (4 + 4 + 2): nothing left.
    await accounted(stack, 3);
    const after = await chat(stack, {});
    assert.equal(after.status, 429);
    await after.body?.cancel();
  } finally {
    await stack.close();
  }
});

async function startWithStateFile(simUrl: string, stateFile: string) {
  const configPath = await writeConfig(
    config(`state_file: ${stateFile}`).replace("{{UPSTREAM}}", simUrl),
  );
  const logs: Record<string, unknown>[] = [];
  const butler = await startButler({
    configPath,
    port: 0,
    log: new Logger({ sink: (line) => logs.push(JSON.parse(line)) }),
  });
  return { butler, logs, url: `http://127.0.0.1:${butler.addr.port}` };
}

Deno.test("usage survives a restart through the state file", async () => {
  const sim = await startOllamaSim({ chunks: 5, chunkDelayMs: 1 });
  const dir = await Deno.makeTempDir({ prefix: "butler-state-" });
  const stateFile = `${dir}/usage.json`;
  try {
    // First run: no file yet; it is created at startup.
    const first = await startWithStateFile(sim.url, stateFile);
    assert.deepEqual(JSON.parse(await Deno.readTextFile(stateFile)).usage, {});
    assert.ok(first.logs.some((l) =>
      l.level === "warn" &&
      l.msg === "no state file; every token budget starts from zero"
    ));
    for (let i = 0; i < 2; i++) {
      const response = await fetch(first.url + "/api/generate", {
        method: "POST",
        headers: bearer(KEYS.app),
        body: JSON.stringify({ model: "llama3.2", prompt: "x" }),
      });
      await response.text();
    }
    await eventually(() =>
      first.logs.filter((l) => l.msg === "response").length === 2
        ? true
        : undefined
    );
    await first.butler.shutdown();
    const saved = JSON.parse(await Deno.readTextFile(stateFile));
    assert.equal(saved.usage["client:app"].generated, 10);

    // Second run: 2 of 12 left, then spent.
    const second = await startWithStateFile(sim.url, stateFile);
    try {
      sim.clear();
      const response = await fetch(second.url + "/api/generate", {
        method: "POST",
        headers: bearer(KEYS.app),
        body: JSON.stringify({ model: "llama3.2", prompt: "x" }),
      });
      await response.text();
      assert.equal(sim.records[0].acted?.numPredict, 2);
    } finally {
      await second.butler.shutdown();
    }

    // Usage from an earlier day does not count: the budget has reset.
    const yesterday = new Date(Date.now() - 86_400_000 * 2)
      .toISOString().slice(0, 10);
    await Deno.writeTextFile(
      stateFile,
      JSON.stringify({
        version: 1,
        usage: { "client:app": { day: yesterday, generated: 12 } },
      }),
    );
    const third = await startWithStateFile(sim.url, stateFile);
    try {
      sim.clear();
      const response = await fetch(third.url + "/api/generate", {
        method: "POST",
        headers: bearer(KEYS.app),
        body: JSON.stringify({ model: "llama3.2", prompt: "x" }),
      });
      await response.text();
      assert.equal(response.status, 200);
      assert.equal(sim.records[0].acted?.numPredict, 12);
    } finally {
      await third.butler.shutdown();
    }
  } finally {
    await sim.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a corrupt or unwritable state file stops startup", async () => {
  const sim = await startOllamaSim();
  const dir = await Deno.makeTempDir({ prefix: "butler-state-" });
  try {
    const corrupt = `${dir}/usage.json`;
    await Deno.writeTextFile(corrupt, '{"version": 1, "usage": ');
    await assert.rejects(
      () => startWithStateFile(sim.url, corrupt),
      (error: unknown) =>
        error instanceof StateFileError &&
        /not valid JSON/.test(error.message) &&
        /move it aside/.test(error.message),
    );
    // The file is left as it was, for the operator to look at.
    assert.equal(await Deno.readTextFile(corrupt), '{"version": 1, "usage": ');

    await assert.rejects(
      () => startWithStateFile(sim.url, `${dir}/missing-dir/usage.json`),
      (error: unknown) =>
        error instanceof StateFileError &&
        /cannot be written/.test(error.message),
    );
  } finally {
    await sim.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a non-streamed answer abandoned midway is charged its whole reservation", async () => {
  // A long answer: its text is far over the 256 KiB Butler reads whole, and
  // its counts come only at its end.
  const stack = await startStack(config("", 150_000), {
    sim: { chunks: 100_000, chunkDelayMs: 0 },
  });
  try {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: Number(new URL(stack.url).port),
    });
    const body = JSON.stringify({
      model: "llama3.2",
      messages: [{ role: "user", content: "a long one" }],
      stream: false,
    });
    await conn.write(new TextEncoder().encode(
      `POST /api/chat HTTP/1.1\r\nHost: x\r\n` +
        `Authorization: Bearer ${KEYS.app}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n` +
        body,
    ));
    // Read some of the answer, then hang up.
    const buffer = new Uint8Array(16 * 1024);
    let read = 0;
    while (read < 64 * 1024) {
      const n = await conn.read(buffer);
      if (n === null) break;
      read += n;
    }
    conn.close();

    const line = await eventually(() =>
      stack.logs.find((l) => l.msg === "response" && l.route === "/api/chat")
    );
    assert.equal(line.end, "client_closed");
    // No count was read; the reservation (all that was left) is charged.
    assert.equal(line.generated_tokens, 150_000);
    const next = await chat(stack, {});
    assert.equal(next.status, 429);
    await next.body?.cancel();
    // Only the abandoned request ever reached Ollama.
    assert.equal(stack.sim.records.length, 1);
  } finally {
    await stack.close();
  }
});

Deno.test("a stream cut at its cap is charged the cap, never past the budget", async () => {
  // This upstream ignores the OpenAI max_tokens, so the stream guard cuts.
  const stack = await startStack(config(), {
    sim: { chunks: 40, chunkDelayMs: 0, ignoreMaxTokens: true },
  });
  try {
    const delivered: number[] = [];
    for (let i = 0; i < 30; i++) {
      const response = await fetch(stack.url + "/v1/chat/completions", {
        method: "POST",
        headers: bearer(KEYS.limited),
        body: JSON.stringify({
          model: "llama3.2",
          messages: [{ role: "user", content: "hi" }],
          stream: true,
        }),
      });
      if (response.status === 429) {
        await response.body?.cancel();
        break;
      }
      assert.equal(response.status, 200);
      const text = await response.text();
      delivered.push(
        text.split("\n").filter((line) =>
          line.startsWith("data: {") && line.includes('"content":"')
        ).length,
      );
    }
    // max_predict 4 and a budget of 100: 25 streams of exactly 4, then 429.
    assert.ok(delivered.every((n) => n === 4), JSON.stringify(delivered));
    assert.equal(delivered.length, 25);
    assert.equal(stack.sim.records.length, 25, "the refusal reached Ollama");
  } finally {
    await stack.close();
  }
});
