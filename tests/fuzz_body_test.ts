/**
 * Differential fuzzing of Butler's body reader (`go_json.ts` + `go_fields.ts`)
 * against a reference decoder built from Ollama's rules
 * (`support/reference_decoder.ts`), then the same kind of bodies and hostile
 * input through the real server, with the simulator's records as proof of
 * what Ollama acted on.
 *
 * Seeded and reproducible: the seed is printed; `FUZZ_SEED=<n>` replays a
 * run, `FUZZ_CASES=<n>` runs more cases offline.
 */

import assert from "node:assert/strict";
import { JsonSyntaxError, parseJsonAsGo } from "../src/request/go_json.ts";
import {
  FieldConflictError,
  FieldSpellingError,
  FieldTypeError,
  getArray,
  getBool,
  getMapEntry,
  getObject,
  getString,
} from "../src/request/go_fields.ts";
import { fuzzCases, fuzzSeed, Random } from "./support/fuzz_random.ts";
import {
  type OllamaReading,
  ollamaReads,
} from "./support/reference_decoder.ts";
import { bearer, KEYS, startStack } from "./support/harness.ts";
import { allowedModel, fuzzConfig, sendAsApp } from "./support/fuzz_server.ts";
import { setFoldReading } from "./sim/go_decode.ts";

const encoder = new TextEncoder();

// --- Random bodies ---------------------------------------------------------

/** Letters Go folds onto ASCII letters of field names (shared doc §1). */
const FOLDS: Record<string, string[]> = {
  s: ["\u017f"], // ſ LATIN SMALL LETTER LONG S
  k: ["\u212a"], // K KELVIN SIGN
  // ı İ: fold to I under the shared notes' reading, to themselves in Go's
  // tables; Butler refuses them in field names.
  i: ["\u0131", "\u0130"],
};
/** Look-alikes that do not fold: keys with them are unknown to Ollama. */
const DECOYS: Record<string, string> = {
  a: "\u0430",
  e: "\u0435",
  o: "\u043e",
  s: "\u0455",
  p: "\u0440",
};

function keyVariant(random: Random, name: string): string {
  let out = "";
  for (const ch of name) {
    const roll = random.next();
    const folds = FOLDS[ch];
    if (folds !== undefined && roll < 0.15) out += random.pick(folds);
    else if (DECOYS[ch] !== undefined && roll < 0.18) out += DECOYS[ch];
    else if (roll < 0.5) out += ch.toUpperCase();
    else out += ch;
  }
  if (random.chance(0.04)) out += random.pick([" ", "\u200b", "_", "s"]);
  return out;
}

/** JSON text for a string, with some characters written as `\uXXXX`. */
function jsonString(random: Random, text: string): string {
  if (!random.chance(0.2)) return JSON.stringify(text);
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    if (code <= 0xffff && random.chance(0.3)) {
      out += "\\u" + code.toString(16).padStart(4, "0");
    } else {
      out += JSON.stringify(ch).slice(1, -1);
    }
  }
  return out + '"';
}

type Value = (random: Random) => string;

function object(random: Random, entries: [string, string][]): string {
  return "{" +
    random.shuffle(entries).map(([k, v]) => `${jsonString(random, k)}:${v}`)
      .join(",") +
    "}";
}

/** 0–2 entries for `name`, keys varied, sometimes the same value twice. */
function occurrences(
  random: Random,
  name: string,
  value: Value,
): [string, string][] {
  const count = random.pick([0, 1, 1, 1, 2]);
  const first = value(random);
  return Array.from({ length: count }, (_, i) => [
    i === 0 || random.chance(0.5) ? keyVariant(random, name) : name,
    i > 0 && random.chance(0.4) ? first : value(random),
  ]);
}

const MODEL_NAMES = [
  "llama3.2",
  "LLAMA3.2",
  "llama3.2:latest",
  "llama3.2:1b",
  "Llama3.2:1B",
  "qwen2.5:7b",
  "library/qwen2.5:7b",
  "registry.ollama.ai/library/llama3.2:latest",
  "llama3.2:1b:local",
  "llama3.2:cloud",
  "gpt-oss:120b-cloud",
  "gpt-oss:120b",
  " llama3.2 ",
  "llama3.2@sha256:abc",
  "",
];

const TEXTS = [
  "hello",
  "forbidden",
  "FoRbIdDeN words",
  "be nice",
  "ſorbidden",
  "",
  "\u00e9t\u00e9",
];

function wrongType(random: Random): string {
  return random.pick(["1", "null", "true", "[]", "{}", '"x"', "-0", "1e3"]);
}

const modelValue: Value = (random) =>
  random.chance(0.1)
    ? wrongType(random)
    : jsonString(random, random.pick(MODEL_NAMES));
const textValue: Value = (random) =>
  random.chance(0.08)
    ? wrongType(random)
    : jsonString(random, random.pick(TEXTS));
const streamValue: Value = (random) =>
  random.pick(["true", "false", "null", '"true"', "1"]);
const numberValue: Value = (random) =>
  random.pick([
    "5",
    "64",
    "65",
    "4096",
    "-1",
    "-2",
    "0",
    "63.9",
    "1e2",
    "1e20",
    "null",
    '"5"',
  ]);

function messageValue(random: Random): string {
  if (random.chance(0.05)) return wrongType(random);
  return object(random, [
    ...occurrences(
      random,
      "role",
      (r) => jsonString(r, r.pick(["user", "system", "assistant"])),
    ),
    ...occurrences(random, "content", textValue),
    ...(random.chance(0.1) ? [["images", "[]"] as [string, string]] : []),
  ]);
}

const messagesValue: Value = (random) => {
  if (random.chance(0.05)) return wrongType(random);
  const count = random.int(4);
  return "[" +
    Array.from({ length: count }, () => messageValue(random)).join(",") +
    "]";
};

const optionsValue: Value = (random) => {
  if (random.chance(0.05)) return wrongType(random);
  const entries: [string, string][] = [];
  const copies = random.pick([0, 1, 1, 2]);
  for (let i = 0; i < copies; i++) {
    // Option keys are matched exactly: a case variant is an unknown option.
    entries.push([
      random.chance(0.15) ? keyVariant(random, "num_predict") : "num_predict",
      numberValue(random),
    ]);
  }
  if (random.chance(0.3)) entries.push(["temperature", "0.5"]);
  return object(random, entries);
};

/**
 * A random `/api/chat` or `/api/generate` body. `gentle` bodies always name
 * a model (under some key variant) so more of them get past Butler.
 */
function randomBody(
  random: Random,
  route: "/api/chat" | "/api/generate",
  options: { gentle?: boolean } = {},
): Uint8Array {
  if (random.chance(0.02)) {
    return encoder.encode(random.pick(["[]", '"x"', "1", "null"]));
  }
  const entries: [string, string][] = [
    ...(options.gentle
      ? [[keyVariant(random, "model"), modelValue(random)] as [string, string]]
      : []),
    ...occurrences(random, "model", modelValue),
    ...occurrences(random, "stream", streamValue),
    ...occurrences(random, "options", optionsValue),
  ];
  if (route === "/api/chat") {
    entries.push(...occurrences(random, "messages", messagesValue));
  } else {
    entries.push(...occurrences(random, "prompt", textValue));
    entries.push(...occurrences(random, "system", textValue));
  }
  if (random.chance(0.3)) entries.push(["unknown", wrongType(random)]);
  if (random.chance(0.1)) entries.push(["format", '{"type":"object"}']);
  // A field duplicated under an equal value must not change anything.
  if (entries.length > 0 && random.chance(0.2)) {
    entries.push(entries[random.int(entries.length)]);
  }
  return encoder.encode(object(random, entries));
}

// --- Butler's reading --------------------------------------------------------

function butlerReads(
  route: "/api/chat" | "/api/generate",
  bytes: Uint8Array,
): OllamaReading | { refused: string } {
  try {
    const node = parseJsonAsGo(bytes);
    if (node.kind !== "object") return { refused: "not an object" };
    const options = getObject(node, "options");
    const numPredict = options === undefined
      ? undefined
      : getMapEntry(options, "num_predict", "options");
    const texts = route === "/api/chat"
      ? (getArray(node, "messages") ?? []).map((message, i) =>
        getString(message, "content", `messages[${i}]`) ?? ""
      )
      : [getString(node, "prompt") ?? ""];
    return {
      model: getString(node, "model") ?? "",
      stream: getBool(node, "stream") ?? null,
      texts,
      system: route === "/api/generate" ? getString(node, "system") ?? "" : "",
      numPredict: numPredict === undefined || numPredict.kind === "null"
        ? undefined
        : numPredict.kind === "number"
        ? numPredict.value
        : `(${numPredict.kind})`,
    };
  } catch (error) {
    if (
      error instanceof JsonSyntaxError || error instanceof FieldConflictError ||
      error instanceof FieldSpellingError || error instanceof FieldTypeError
    ) {
      return { refused: error.message };
    }
    throw error;
  }
}

Deno.test("fuzz: Butler's body reader reads what Ollama reads, or refuses", () => {
  const seed = fuzzSeed();
  const cases = fuzzCases(4000);
  console.log(`fuzz_body seed=${seed} cases=${cases}`);
  const random = new Random(seed);
  const tally = { agreed: 0, butlerRefused: 0, ollamaRefused: 0 };
  for (let i = 0; i < cases; i++) {
    const route = random.pick(["/api/chat", "/api/generate"] as const);
    const body = randomBody(random, route);
    const ollama = ollamaReads(route, body);
    const butler = butlerReads(route, body);
    if ("refused" in ollama) {
      tally.ollamaRefused++;
      continue;
    }
    if ("refused" in butler) {
      tally.butlerRefused++;
      continue;
    }
    const text = new TextDecoder().decode(body);
    const where = `seed=${seed} case=${i} ${route} body=${text}`;
    assert.equal(butler.model, ollama.model, `model differs: ${where}`);
    assert.equal(butler.stream, ollama.stream, `stream differs: ${where}`);
    assert.deepEqual(butler.texts, ollama.texts, `texts differ: ${where}`);
    if (route === "/api/generate") {
      assert.equal(butler.system, ollama.system, `system differs: ${where}`);
    }
    assert.equal(
      butler.numPredict,
      ollama.numPredict,
      `num_predict differs: ${where}`,
    );
    tally.agreed++;
  }
  console.log(`fuzz_body ${JSON.stringify(tally)}`);
  // The generator must exercise the interesting cases, not only refusals.
  assert.ok(tally.agreed > cases / 5, JSON.stringify(tally));
});

// --- Through the real server -------------------------------------------------

const CONFIG = fuzzConfig(`    max_predict: 64
    cap_mode: clamp
    deny_prompt_patterns: ["(?i)forbidden"]
`);

Deno.test("fuzz through the server: whatever Ollama acts on is within policy", async () => {
  const seed = fuzzSeed();
  const cases = Math.ceil(fuzzCases(4000) / 5);
  console.log(`fuzz_body e2e seed=${seed} cases=${cases}`);
  const random = new Random(seed ^ 0x5eed);
  const stack = await startStack(CONFIG, {
    sim: { chunks: 2, chunkDelayMs: 0 },
  });
  try {
    const statuses = new Map<number, number>();
    for (let i = 0; i < cases; i++) {
      const route = random.pick(["/api/chat", "/api/generate"] as const);
      const body = randomBody(random, route, { gentle: true });
      // Half the cases meet an Ollama that folds ı and İ as Go's tables do,
      // half one that folds them as the shared notes say: Butler must be
      // safe under both.
      const reading = i % 2 === 0 ? "notes" : "go";
      const previous = setFoldReading(reading);
      stack.sim.clear();
      let status: number;
      try {
        status = await sendAsApp(stack.url, { path: route, body });
      } finally {
        setFoldReading(previous);
      }
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      const where = `seed=${seed} case=${i} fold=${reading} ${route} ` +
        `status=${status} body=${new TextDecoder().decode(body)}`;
      assert.ok(status < 500, `server error: ${where}`);
      for (const record of stack.sim.records) {
        const acted = record.acted;
        if (acted === undefined) continue;
        assert.ok(
          acted.models.every(allowedModel),
          `Ollama acted on ${acted.models}: ${where}`,
        );
        assert.ok(!acted.forwardedToCloud, `sent to the cloud: ${where}`);
        assert.ok(
          acted.texts.every((text) => !/forbidden/i.test(text)),
          `a denied prompt reached Ollama: ${where}`,
        );
        assert.ok(
          acted.numPredict !== undefined && acted.numPredict >= 0 &&
            acted.numPredict <= 64,
          `num_predict ${acted.numPredict} reached Ollama: ${where}`,
        );
      }
    }
    console.log(
      `fuzz_body e2e statuses ${JSON.stringify(Object.fromEntries(statuses))}`,
    );
    assert.ok((statuses.get(200) ?? 0) > 0, "no request was ever forwarded");
  } finally {
    await stack.close();
  }
});

// --- Hostile input -----------------------------------------------------------

function hostileBodies(random: Random): Uint8Array[] {
  const valid =
    '{"model":"llama3.2","messages":[{"role":"user","content":"hi"}]}';
  const bodies: Uint8Array[] = [];
  // Truncated at every position.
  for (let end = 0; end < valid.length; end++) {
    bodies.push(encoder.encode(valid.slice(0, end)));
  }
  // Random bytes and random JSON-ish characters.
  for (let i = 0; i < 60; i++) {
    bodies.push(
      Uint8Array.from({ length: random.int(200) }, () => random.int(256)),
    );
    bodies.push(encoder.encode(
      Array.from(
        { length: random.int(80) },
        () => random.pick([...'{}[]:,"\\ 0123456789.eE-+tfnul']),
      ).join(""),
    ));
  }
  // Invalid UTF-8 inside strings and keys.
  for (
    const bad of [
      [0xff],
      [0xc3, 0x28],
      [0xc0, 0xaf],
      [0xed, 0xa0, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
      [0xe2, 0x82],
    ]
  ) {
    const prefix = encoder.encode(
      '{"model":"llama3.2","messages":[{"role":"user","content":"',
    );
    const suffix = encoder.encode('"}]}');
    bodies.push(new Uint8Array([...prefix, ...bad, ...suffix]));
    bodies.push(
      new Uint8Array([
        ...encoder.encode('{"'),
        ...bad,
        ...encoder.encode('":1,"model":"llama3.2"}'),
      ]),
    );
  }
  // Deep nesting, in a known and an unknown field.
  for (const depth of [65, 1000, 100_000]) {
    bodies.push(encoder.encode("[".repeat(depth) + "]".repeat(depth)));
    bodies.push(encoder.encode(
      `{"model":"llama3.2","x":${'{"a":'.repeat(depth)}1${"}".repeat(depth)}}`,
    ));
    bodies.push(encoder.encode(`{"model":"llama3.2","x":${"[".repeat(depth)}`));
  }
  // Huge and odd numbers.
  for (
    const number of [
      "1e999999",
      "-1e999999",
      "1".repeat(5000),
      "1e-400",
      "-0",
      "0.0000000000000000000000001",
      "9223372036854775808",
      "-9223372036854775809",
      "1.7976931348623157e309",
    ]
  ) {
    bodies.push(encoder.encode(
      `{"model":"llama3.2","prompt":"hi","options":{"num_predict":${number},"num_ctx":${number}}}`,
    ));
    bodies.push(
      encoder.encode(`{"model":"llama3.2","prompt":"hi","unknown":${number}}`),
    );
  }
  // Long strings, many keys.
  bodies.push(
    encoder.encode(`{"${"k".repeat(200_000)}":1,"model":"llama3.2"}`),
  );
  bodies.push(encoder.encode(
    "{" + Array.from({ length: 50_000 }, (_, i) => `"k${i}":${i}`).join(",") +
      ',"model":"llama3.2","prompt":"hi"}',
  ));
  return bodies;
}

Deno.test("hostile bodies through the server: a 4xx or an allowed answer, never a crash or a hang", async () => {
  const seed = fuzzSeed();
  console.log(`hostile seed=${seed}`);
  const random = new Random(seed ^ 0xbad);
  const stack = await startStack(CONFIG, {
    sim: { chunks: 2, chunkDelayMs: 0 },
  });
  try {
    const bodies = hostileBodies(random);
    for (const [i, body] of bodies.entries()) {
      const route = i % 2 === 0 ? "/api/generate" : "/api/chat";
      const started = performance.now();
      const status = await sendAsApp(stack.url, { path: route, body });
      const elapsed = performance.now() - started;
      const shown = new TextDecoder().decode(body.subarray(0, 120));
      assert.ok(status < 500, `status ${status} for body ${i}: ${shown}`);
      assert.ok(elapsed < 5000, `${elapsed} ms for body ${i}: ${shown}`);
      if (status === 200) {
        // Only well-formed bodies within policy may pass.
        const record = stack.sim.records.at(-1)!;
        assert.ok(record.acted?.models.every(allowedModel));
        assert.ok(record.acted!.numPredict! <= 64);
      }
    }
    const version = await fetch(`${stack.url}/api/version`, {
      headers: bearer(KEYS.app),
    });
    assert.equal(version.status, 200);
    await version.body?.cancel();
    assert.ok(
      !stack.logs.some((line) => line.msg === "internal error"),
      "an internal error was logged",
    );
  } finally {
    await stack.close();
  }
});
