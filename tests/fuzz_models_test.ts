/**
 * Differential fuzzing of Butler's model-reference resolution
 * (`src/models/resolve.ts`) against the simulator's independent resolver
 * built from Ollama's rules (`tests/sim/model_ref.ts`), then through the
 * real server: whatever model Ollama acts on must be the one Butler decided
 * on, or the request is refused.
 *
 * Seeded and reproducible: the seed is printed; `FUZZ_SEED=<n>` replays a
 * run, `FUZZ_CASES=<n>` runs more cases offline.
 */

import assert from "node:assert/strict";
import { ModelRefError, resolveModelRef } from "../src/models/resolve.ts";
import { resolveModelRef as ollamaResolves } from "./sim/model_ref.ts";
import { fuzzCases, fuzzSeed, Random } from "./support/fuzz_random.ts";
import { startStack } from "./support/harness.ts";
import { allowedModel, fuzzConfig, sendAsApp } from "./support/fuzz_server.ts";

const INSTALLED = [
  "llama3.2:latest",
  "llama3.2:1b",
  "qwen2.5:7b",
  "nomic-embed-text:latest",
  "gpt-oss:120b-cloud",
];

/** Parts Ollama accepts, and parts it refuses (picked one time in ten). */
const HOSTS = {
  good: [
    "registry.ollama.ai",
    "REGISTRY.ollama.ai",
    "Registry.Ollama.AI",
    "ollama.com",
    "example.com:5000",
    "localhost",
    "hf.co",
    "a_b",
  ],
  bad: ["-bad", "ho st", "", "h\u00f6st"],
};
const NAMESPACES = {
  good: ["library", "LIBRARY", "Library", "me", "my-ns", "_x"],
  bad: ["a.b", "-x", "", "n\u0131"],
};
const MODELS = {
  good: [
    "llama3.2",
    "LLAMA3.2",
    "Llama3.2",
    "qwen2.5",
    "QWEN2.5",
    "gpt-oss",
    "nomic-embed-text",
    "m",
  ],
  bad: ["x".repeat(81), "ll@ma", "-llama", ".llama", "llama\u0131", ""],
};
const TAGS = {
  good: [
    "latest",
    "LATEST",
    "1b",
    "1B",
    "7b",
    "7B",
    "120b",
    "120b-cloud",
    "120B-CLOUD",
    "q4_0",
    "cloud",
    "local",
  ],
  bad: ["x".repeat(81), "-x", "", "t\u0130g"],
};

function part(random: Random, parts: { good: string[]; bad: string[] }) {
  return random.pick(random.chance(0.1) ? parts.bad : parts.good);
}
const SOURCES = [":cloud", ":local", ":CLOUD", ":Local", "-cloud", ""];
const SPACES = [" ", "\t", "\n", "\u00a0", "\u0085", "\u3000", "\ufeff", ""];

/** A random model reference, mostly well-formed, sometimes not. */
function randomRef(random: Random): string {
  let text = "";
  if (random.chance(0.05)) text += random.pick(["https://", "http://"]);
  if (random.chance(0.25)) text += part(random, HOSTS) + "/";
  if (random.chance(0.35)) text += part(random, NAMESPACES) + "/";
  text += part(random, MODELS);
  if (random.chance(0.6)) text += ":" + part(random, TAGS);
  if (random.chance(0.05)) text += "@sha256:" + "a".repeat(64);
  if (random.chance(0.3)) text += random.pick(SOURCES);
  if (random.chance(0.08)) text += random.pick(SOURCES);
  if (random.chance(0.1)) {
    text = random.pick(SPACES) + text + random.pick(SPACES);
  }
  if (random.chance(0.03)) {
    const at = random.int(text.length + 1);
    text = text.slice(0, at) + random.pick(["/", ":", "//", "::"]) +
      text.slice(at);
  }
  return text;
}

Deno.test("fuzz: Butler resolves a model reference as Ollama does, or refuses", () => {
  const seed = fuzzSeed();
  const cases = fuzzCases(4000);
  console.log(`fuzz_models seed=${seed} cases=${cases}`);
  const random = new Random(seed);
  const tally = { agreed: 0, butlerRefused: 0, ollamaRefused: 0 };
  for (let i = 0; i < cases; i++) {
    const text = randomRef(random);
    const where = `seed=${seed} case=${i} ref=${JSON.stringify(text)}`;
    let butler;
    try {
      butler = resolveModelRef(text);
    } catch (error) {
      if (!(error instanceof ModelRefError)) throw error;
      tally.butlerRefused++;
      continue;
    }
    const ollama = ollamaResolves(text, { installed: INSTALLED });
    if (!ollama.ok) {
      tally.ollamaRefused++;
      continue;
    }
    // Same source: a reference Ollama sends to ollama.com is one Butler
    // knows is going there.
    assert.equal(
      butler.source === "cloud",
      ollama.source === "cloud",
      `source differs (Butler ${butler.source}): ${where}`,
    );
    // Same model, ignoring case (Ollama matches installed names so).
    const butlerFull = butler.full.replace(/:cloud$/, "");
    assert.equal(
      butlerFull.toLowerCase(),
      ollama.full.toLowerCase(),
      `model differs: ${where}`,
    );
    tally.agreed++;
  }
  console.log(`fuzz_models ${JSON.stringify(tally)}`);
  assert.ok(tally.agreed > cases / 4, JSON.stringify(tally));
});

const CONFIG = fuzzConfig();

Deno.test("fuzz through the server: Ollama only ever acts on a model the policy allows", async () => {
  const seed = fuzzSeed();
  const cases = Math.ceil(fuzzCases(4000) / 5);
  console.log(`fuzz_models e2e seed=${seed} cases=${cases}`);
  const random = new Random(seed ^ 0x0de1);
  const stack = await startStack(CONFIG, {
    sim: { chunks: 1, chunkDelayMs: 0 },
  });
  try {
    const statuses = new Map<number, number>();
    for (let i = 0; i < cases; i++) {
      const model = randomRef(random);
      const route = random.pick([
        "/api/generate",
        "/api/chat",
        "/v1/chat/completions",
        "/api/show",
      ]);
      const body = route === "/api/generate"
        ? { model, prompt: "hi", stream: false }
        : route === "/api/show"
        ? { [random.pick(["model", "name", "Name"])]: model }
        : { model, stream: false, messages: [{ role: "user", content: "hi" }] };
      stack.sim.clear();
      const status = await sendAsApp(stack.url, {
        path: route,
        body: JSON.stringify(body),
      });
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      const where = `seed=${seed} case=${i} ${route} model=${
        JSON.stringify(model)
      } status=${status}`;
      assert.ok(status < 500, `server error: ${where}`);
      for (const record of stack.sim.records) {
        const acted = record.acted;
        if (acted === undefined) continue;
        assert.ok(
          acted.models.every(allowedModel),
          `Ollama acted on ${acted.models}: ${where}`,
        );
        assert.ok(!acted.forwardedToCloud, `sent to the cloud: ${where}`);
      }
    }
    console.log(
      `fuzz_models e2e statuses ${
        JSON.stringify(Object.fromEntries(statuses))
      }`,
    );
    assert.ok((statuses.get(200) ?? 0) > 0, "no request was ever forwarded");
  } finally {
    await stack.close();
  }
});
