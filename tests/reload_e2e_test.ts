/**
 * Reloading the config while serving: a broken config keeps the old one
 * (logged and counted), a good one switches atomically, requests in flight
 * finish under the policy they started with, counters and budgets carry
 * over by subject name, and no request fails during reloads under load.
 * The real SIGHUP path is exercised once in a subprocess.
 */

import assert from "node:assert/strict";
import { bearer, KEYS, type Stack, startStack } from "./support/harness.ts";
import { startOllamaSim } from "./sim/ollama_sim.ts";
import {
  collect,
  eventually as eventuallyAsync,
  freePort,
  MAIN,
  spawnDeno,
  waitHealthy,
} from "./support/butler_process.ts";

function config(options: { name?: string; models?: string } = {}): string {
  return `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: ${options.name ?? "app"}
    key: ${KEYS.app}
    allow_models: [${options.models ?? '"llama3.2"'}]
    rate_limit: 5/min
    max_tokens_per_day: 12
`;
}

async function writeConfigFor(stack: Stack, text: string) {
  await Deno.writeTextFile(
    stack.configPath,
    text.replaceAll("{{UPSTREAM}}", stack.sim.url),
  );
}

function generate(url: string, model = "llama3.2", stream = false) {
  return fetch(url + "/api/generate", {
    method: "POST",
    headers: bearer(KEYS.app),
    body: JSON.stringify({ model, prompt: "x", stream }),
  });
}

async function eventually<T>(find: () => T | undefined): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const found = find();
    if (found !== undefined) return found;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error("condition not reached within 5 s");
}

Deno.test("a broken config keeps the old one; a good one switches", async () => {
  const stack = await startStack(config(), { sim: { chunks: 1 } });
  try {
    await writeConfigFor(stack, config() + "  - name: [broken\n");
    assert.equal(await stack.butler.reload(), false);
    const failed = stack.logs.find((l) =>
      l.msg === "config reload failed; keeping the previous config"
    );
    assert.equal(failed?.level, "error");
    assert.equal(typeof failed?.error, "string");
    const still = await generate(stack.url);
    assert.equal(still.status, 200);
    await still.body?.cancel();

    await writeConfigFor(stack, config({ models: '"qwen2.5"' }));
    assert.equal(await stack.butler.reload(), true);
    const denied = await generate(stack.url);
    assert.equal(denied.status, 403);
    await denied.body?.cancel();
    const allowed = await generate(stack.url, "qwen2.5:7b");
    assert.equal(allowed.status, 200);
    await allowed.body?.cancel();

    const metrics = await (await fetch(stack.url + "/metrics")).text();
    assert.match(metrics, /butler_config_reloads_total\{result="failure"\} 1/);
    assert.match(metrics, /butler_config_reloads_total\{result="success"\} 1/);
  } finally {
    await stack.close();
  }
});

Deno.test("a stream in flight finishes under the policy it started with", async () => {
  const stack = await startStack(config(), {
    sim: { chunks: 8, chunkDelayMs: 40 },
  });
  try {
    const response = await generate(stack.url, "llama3.2", true);
    assert.equal(response.status, 200);
    const reader = response.body!.getReader();
    await reader.read();

    // The client loses access to the model while its answer streams.
    await writeConfigFor(stack, config({ models: '"qwen2.5"' }));
    assert.equal(await stack.butler.reload(), true);
    const denied = await generate(stack.url);
    assert.equal(denied.status, 403);
    await denied.body?.cancel();

    let rest = "";
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += decoder.decode(value, { stream: true });
    }
    const last = JSON.parse(rest.trim().split("\n").at(-1)!);
    assert.equal(last.done, true);
    assert.equal(stack.sim.records[0].cancelled, false);
  } finally {
    await stack.close();
  }
});

Deno.test("rate counters and budgets carry over by subject name", async () => {
  const stack = await startStack(config(), { sim: { chunks: 5 } });
  try {
    for (let i = 0; i < 2; i++) {
      const response = await generate(stack.url);
      assert.equal(response.status, 200);
      await response.text();
    }
    await eventually(() =>
      stack.logs.filter((l) => l.msg === "response").length === 2
        ? true
        : undefined
    );

    // Same name, other settings: 10 of 12 tokens and 2 of 5 requests used.
    await writeConfigFor(stack, config({ models: '"llama3.2", "qwen2.5"' }));
    assert.equal(await stack.butler.reload(), true);
    stack.sim.clear();
    const third = await generate(stack.url);
    assert.equal(third.status, 200);
    assert.match(third.headers.get("ratelimit")!, /;r=2;/);
    await third.text();
    assert.equal(stack.sim.records[0].acted?.numPredict, 2);
    await eventually(() =>
      stack.logs.filter((l) => l.msg === "response").length === 3
        ? true
        : undefined
    );
    const spent = await generate(stack.url);
    assert.equal(spent.status, 429);
    await spent.body?.cancel();

    // Another name is another subject, with its own budget.
    await writeConfigFor(stack, config({ name: "renamed" }));
    assert.equal(await stack.butler.reload(), true);
    stack.sim.clear();
    const fresh = await generate(stack.url);
    assert.equal(fresh.status, 200);
    await fresh.text();
    assert.equal(stack.sim.records[0].acted?.numPredict, 12);
  } finally {
    await stack.close();
  }
});

Deno.test("reloads under load: broken and good configs, no failed request", async () => {
  const stack = await startStack(
    // With a budget, each request reserves its generation limit: max_predict
    // keeps that small, so requests run side by side.
    config().replace("rate_limit: 5/min", "rate_limit: unlimited")
      .replace("max_tokens_per_day: 12", "max_tokens_per_day: 100000000")
      .replace("    rate_limit:", "    max_predict: 64\n    rate_limit:"),
    { sim: { chunks: 2, chunkDelayMs: 1 } },
  );
  const good = await Deno.readTextFile(stack.configPath);
  const deadline = Date.now() + 10_000;
  let reloading = true;
  const statuses: number[] = [];
  try {
    // Eight clients in a loop, bounded in count and in time.
    const workers = Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 100 && reloading && Date.now() < deadline; i++) {
        const response = await generate(stack.url, "llama3.2", i % 2 === 0);
        await response.text();
        statuses.push(response.status);
      }
    });

    const results: boolean[] = [];
    for (let round = 0; round < 5; round++) {
      await new Promise((resolve) => setTimeout(resolve, 30));
      await Deno.writeTextFile(stack.configPath, good + "listen: [\n");
      results.push(await stack.butler.reload());
      await new Promise((resolve) => setTimeout(resolve, 30));
      await Deno.writeTextFile(stack.configPath, good);
      results.push(await stack.butler.reload());
    }
    reloading = false;
    await Promise.all(workers);

    assert.deepEqual(results, Array(5).fill([false, true]).flat());
    assert.ok(statuses.length >= 40, `only ${statuses.length} requests`);
    assert.deepEqual(
      statuses.filter((status) => status !== 200),
      [],
      "every request during the reloads succeeded",
    );
  } finally {
    reloading = false;
    await stack.close();
  }
});

Deno.test("SIGHUP to the process re-reads the config", async () => {
  const sim = await startOllamaSim({ chunks: 1 });
  const dir = await Deno.makeTempDir({ prefix: "butler-reload-" });
  const configPath = `${dir}/butler.yaml`;
  const port = freePort();
  const write = (models: string, extra = "") =>
    Deno.writeTextFile(
      configPath,
      config({ models }).replace("{{UPSTREAM}}", sim.url)
        .replace("listen: 127.0.0.1:0", `listen: 127.0.0.1:${port}`) + extra,
    );
  await write('"llama3.2"');
  const child = spawnDeno([
    "run",
    "--no-lock",
    "--allow-all",
    "--unstable-no-legacy-abort",
    MAIN,
    "--config",
    configPath,
  ]);
  const output = collect(child.stdout);
  const errors = collect(child.stderr);
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHealthy(url);
    const before = await generate(url);
    assert.equal(before.status, 200);
    await before.body?.cancel();

    await write('"qwen2.5"');
    child.kill("SIGHUP");
    await eventuallyAsync(async () => {
      const response = await generate(url);
      await response.body?.cancel();
      return response.status === 403;
    });

    await write('"llama3.2"', "  - name: [broken\n");
    child.kill("SIGHUP");
    await eventuallyAsync(() =>
      Promise.resolve(output.text().includes("config reload failed"))
    );
    const kept = await generate(url, "qwen2.5:7b");
    assert.equal(kept.status, 200);
    await kept.body?.cancel();
  } finally {
    child.kill("SIGTERM");
    const status = await child.status;
    await Promise.all([output.done, errors.done]);
    await sim.close();
    await Deno.remove(dir, { recursive: true });
    assert.equal(status.code, 0, errors.text());
  }
});

Deno.test("a reload that changes listen or tls says they apply at restart only", async () => {
  const stack = await startStack(config(), { sim: { chunks: 1 } });
  try {
    await writeConfigFor(
      stack,
      config().replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:9") +
        "tls:\n  cert: /nonexistent/cert.pem\n  key: /nonexistent/key.pem\n",
    );
    assert.equal(await stack.butler.reload(), true);
    const warning = stack.logs.find((line) =>
      line.msg === "these fields change at restart only; still in use"
    );
    assert.ok(warning, JSON.stringify(stack.logs));
    assert.deepEqual(warning.fields, ["listen", "tls"]);
    assert.equal(warning.tls, false);
    // Still served where it was, over plain HTTP.
    const response = await generate(stack.url);
    assert.equal(response.status, 200);
    await response.body?.cancel();
  } finally {
    await stack.close();
  }
});
