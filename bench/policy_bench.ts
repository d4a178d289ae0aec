/**
 * What the issue-3 policy costs, measured side by side in one run:
 *
 * 1. Prompt filters: milliseconds per MB of prompt text through the real
 *    check (`checkPrompts`: text collection, normalization, RE2 matching on
 *    each text and on the texts joined) for 1 and 20 patterns, on ordinary
 *    text and on the worst case (`ignore ignore …` against
 *    `(?i)ignore.*instructions`), with JavaScript's backtracking engine on a
 *    smaller input of the worst case for comparison.
 * 2. The whole policy on a small request: `decide` in process, and a
 *    request over real sockets through Butler with no policy limits and with
 *    every limit of the issue switched on, against the simulator directly.
 *
 * Run: `deno run --allow-all bench/policy_bench.ts`. Every loop is bounded
 * in count and in time; everything listens on 127.0.0.1.
 *
 * @module
 */

import type { SubjectPolicy } from "../src/config/policy.ts";
import { compilePromptPattern } from "../src/config/patterns.ts";
import { compilePolicy } from "../src/config/load.ts";
import { parseJsonAsGo } from "../src/request/go_json.ts";
import { checkPrompts } from "../src/policy/prompt_filter.ts";
import { normalizeForFilter } from "../src/policy/normalize_text.ts";
import { decide } from "../src/policy/decide.ts";
import { matchRoute } from "../src/routes/table.ts";
import type { Identity } from "../src/auth/identity.ts";
import { startOllamaSim } from "../tests/sim/ollama_sim.ts";
import { startButler } from "../src/serve.ts";
import { Logger } from "../src/observe/log.ts";

const MB = 1024 * 1024;
const TIME_LIMIT_MS = 20_000;

/** Twenty deny patterns of the kind operators write. */
const PATTERNS = [
  "(?i)ignore.*instructions",
  "(?i)disregard (all|any|the) (previous|prior|above)",
  "(?i)\\bjailbreak\\b",
  "(?i)developer\\s+mode",
  "(?i)secret\\s+plan",
  "(?i)you are now (DAN|evil)",
  "(?i)pretend (you are|to be) (unrestricted|unfiltered)",
  "(?i)\\b(system|hidden) prompt\\b",
  "(?i)reveal (your|the) (instructions|rules)",
  "(?i)\\bpassword\\s*[:=]",
  "\\b\\d{3}-\\d{2}-\\d{4}\\b",
  "(?i)api[_-]?key\\s*[:=]",
  "(?i)\\bBEGIN (RSA|OPENSSH) PRIVATE KEY\\b",
  "(?i)how to (make|build) (a )?(bomb|weapon)",
  "(?i)\\bexploit\\b.*\\bCVE-\\d{4}-\\d+",
  "(?i)bypass (the )?(filter|safety|guard)",
  "(?i)act as (an? )?(unrestricted|uncensored)",
  "(?i)do anything now",
  "(?i)\\btoken\\s+smuggling\\b",
  "(?i)base64\\s*decode.*execute",
];

function policyWith(patterns: readonly string[]): SubjectPolicy {
  return {
    origin: "clients[0]",
    allowModels: ["*"],
    denyModels: [],
    denyPromptPatterns: patterns.map((p, i) => compilePromptPattern(p, i)),
    capMode: "refuse",
    allowContext: false,
    allowManagement: false,
  };
}

function ordinaryText(bytes: number): string {
  const sentence = "The quick brown fox jumps over the lazy dog while the " +
    "committee reviews the quarterly figures and drafts a short summary. ";
  return sentence.repeat(Math.ceil(bytes / sentence.length)).slice(0, bytes);
}

function worstText(bytes: number): string {
  return "ignore ".repeat(Math.ceil(bytes / 7)).slice(0, bytes);
}

/** Median of `runs` timings of `fn`, in ms; stops early past the limit. */
function timeMedian(fn: () => void, runs: number): number {
  const times: number[] = [];
  const started = performance.now();
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
    if (performance.now() - started > TIME_LIMIT_MS) break;
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

function chatBody(text: string) {
  // The text split over several messages, so the joined check runs too.
  const parts = 8;
  const size = Math.ceil(text.length / parts);
  const messages = Array.from({ length: parts }, (_, i) => ({
    role: "user",
    content: text.slice(i * size, (i + 1) * size),
  }));
  return parseJsonAsGo(
    new TextEncoder().encode(JSON.stringify({ model: "m", messages })),
  );
}

function filterCost(): void {
  console.log("\n## Prompt filter cost (checkPrompts, median of 5)\n");
  console.log("| input | size | patterns | ms | ms per MB | refused |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  const inputs: [string, string][] = [
    ["ordinary text", ordinaryText(MB)],
    ["`ignore ` repeated", worstText(MB)],
    ["`ignore ` repeated", worstText(200 * 1024)],
    ["`ignore ` repeated, then `instructions`", worstText(MB) + "instructions"],
  ];
  for (const [name, text] of inputs) {
    const body = chatBody(text);
    for (const count of [1, 20]) {
      const policies = [policyWith(PATTERNS.slice(0, count))];
      let refused = false;
      const ms = timeMedian(() => {
        refused = checkPrompts(body, { route: "/api/chat", policies }) !==
          undefined;
      }, 5);
      const size = text.length / MB;
      console.log(
        `| ${name} | ${(text.length / 1024).toFixed(0)} KB | ${count} | ` +
          `${ms.toFixed(1)} | ${(ms / size).toFixed(1)} | ${refused} |`,
      );
    }
  }

  const normalize = timeMedian(() => normalizeForFilter(ordinaryText(MB)), 5);
  console.log(`\nnormalization alone: ${normalize.toFixed(1)} ms per MB`);

  // The same worst case in JavaScript's backtracking engine, on a smaller
  // input so the run stays short: it grows with the square of the size.
  const js = /ignore.*instructions/i;
  const small = worstText(50 * 1024);
  const jsMs = timeMedian(() => js.test(small), 3);
  const re2 = compilePromptPattern("(?i)ignore.*instructions", 0);
  const re2Ms = timeMedian(() => re2.test(small), 3);
  console.log(
    `worst case on 50 KB: JavaScript RegExp ${jsMs.toFixed(0)} ms, ` +
      `RE2 (re2js) ${re2Ms.toFixed(1)} ms`,
  );
}

const KEY = "bench-key-0123456789abcdef";

function config(full: boolean): string {
  const limits = full
    ? `
    rate_limit: 1000000/sec
    max_concurrent: 64
    max_request_bytes: 1048576
    max_predict: 256
    max_ctx: 8192
    max_keep_alive: 10m
    deny_prompt_patterns:
${PATTERNS.map((p) => `      - ${JSON.stringify(p)}`).join("\n")}`
    : "";
  return `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
${full ? "global_rate_limit: 1000000/sec\nglobal_max_concurrent: 256" : ""}
clients:
  - name: bench
    key: ${KEY}
    allow_models: ["*"]${limits}
`;
}

const SMALL_BODY = JSON.stringify({
  model: "llama3.2",
  messages: [{ role: "user", content: "Summarize the meeting notes." }],
  stream: false,
});

function decideCost(policyFull: SubjectPolicy, policyBare: SubjectPolicy) {
  const match = matchRoute("POST", "http://x/api/chat")!;
  const body = parseJsonAsGo(new TextEncoder().encode(SMALL_BODY));
  const identity = (policy: SubjectPolicy): Identity => ({
    auth: "api_key",
    subjects: [{ key: "client:bench", policy }],
  });
  const rounds = 20_000;
  const per = (policy: SubjectPolicy) => {
    const id = identity(policy);
    for (let i = 0; i < 1000; i++) decide({ match, body }, id);
    const t0 = performance.now();
    for (let i = 0; i < rounds; i++) decide({ match, body }, id);
    return (performance.now() - t0) * 1000 / rounds;
  };
  const bare = per(policyBare);
  const full = per(policyFull);
  console.log("\n## decide() on a small /api/chat body (in process)\n");
  console.log(
    `no limits: ${bare.toFixed(1)} µs; every limit and 20 ` +
      `patterns: ${full.toFixed(1)} µs; added: ${(full - bare).toFixed(1)} µs`,
  );
}

interface Latency {
  mean: number;
  p50: number;
  p99: number;
}

async function measure(url: string, count: number): Promise<Latency> {
  const times: number[] = [];
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    const response = await fetch(url + "/api/chat", {
      method: "POST",
      headers: { authorization: `Bearer ${KEY}` },
      body: SMALL_BODY,
    });
    await response.arrayBuffer();
    if (response.status !== 200) {
      throw new Error(`bench request answered ${response.status}`);
    }
    times.push(performance.now() - t0);
    if (performance.now() - started > TIME_LIMIT_MS) break;
  }
  times.sort((a, b) => a - b);
  return {
    mean: times.reduce((a, b) => a + b, 0) / times.length,
    p50: times[Math.floor(times.length * 0.5)],
    p99: times[Math.floor(times.length * 0.99)],
  };
}

async function requestOverhead(): Promise<void> {
  const sim = await startOllamaSim({ chunkDelayMs: 0, chunks: 3 });
  const quiet = new Logger({ sink: () => {} });
  const dir = await Deno.makeTempDir({ prefix: "butler-bench-" });
  const butlers = [];
  try {
    for (const full of [false, true]) {
      const path = `${dir}/${full ? "full" : "bare"}.yaml`;
      await Deno.writeTextFile(
        path,
        config(full).replaceAll("{{UPSTREAM}}", sim.url),
      );
      butlers.push(
        await startButler({ configPath: path, port: 0, log: quiet }),
      );
    }
    const [bare, full] = butlers.map((b) => `http://127.0.0.1:${b.addr.port}`);

    // Warm up, then alternate rounds so drift hits every target alike.
    for (const url of [sim.url, bare, full]) await measure(url, 300);
    const results = {
      direct: [] as Latency[],
      bare: [] as Latency[],
      full: [] as Latency[],
    };
    for (let round = 0; round < 4; round++) {
      results.direct.push(await measure(sim.url, 500));
      results.bare.push(await measure(bare, 500));
      results.full.push(await measure(full, 500));
    }
    const avg = (list: Latency[], key: keyof Latency) =>
      list.reduce((a, l) => a + l[key], 0) / list.length;

    console.log(
      "\n## A small /api/chat over real sockets (sequential, 4×500)\n",
    );
    console.log("| target | mean µs | p50 µs | p99 µs |");
    console.log("| --- | --- | --- | --- |");
    for (const [name, list] of Object.entries(results)) {
      console.log(
        `| ${name} | ${(avg(list, "mean") * 1000).toFixed(0)} | ` +
          `${(avg(list, "p50") * 1000).toFixed(0)} | ` +
          `${(avg(list, "p99") * 1000).toFixed(0)} |`,
      );
    }
    const added = (key: keyof Latency) =>
      ((avg(results.full, key) - avg(results.bare, key)) * 1000).toFixed(0);
    console.log(
      `\nthe whole policy adds ${added("p50")} µs at the median ` +
        `(${added("mean")} µs on the mean, which outliers on a busy machine ` +
        "sway): full minus bare Butler",
    );

    const policies = await Promise.all(
      [false, true].map((full) =>
        compilePolicy(config(full).replaceAll("{{UPSTREAM}}", sim.url), {
          path: "bench.yaml",
        })
      ),
    );
    decideCost(policies[1].clients[0], policies[0].clients[0]);
  } finally {
    for (const butler of butlers) await butler.shutdown();
    await sim.close();
    await Deno.remove(dir, { recursive: true });
  }
}

console.log(`# Butler policy bench (Deno ${Deno.version.deno})`);
filterCost();
await requestOverhead();
