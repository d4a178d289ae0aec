/**
 * The cost of the core request path: the same requests sent directly to an
 * upstream and through Butler, in one run, on loopback.
 *
 *   deno run -A --unstable-no-legacy-abort bench/core_bench.ts \
 *     [--seconds 5] [--connections 32] [--streams 20]
 *
 * Every server is its own child process, so none shares an event loop with
 * the load generator: the Ollama simulator (`tests/sim/run_sim.ts`), a
 * "stamping" upstream (this file with `--stamping-upstream`), and one Butler
 * in front of each, started under exactly the flags `main.ts permissions`
 * prints. What is measured:
 *
 * 1. Small non-streamed requests with `wrk` at a fixed concurrency:
 *    `GET /api/version` and `POST /api/chat` with `"stream": false`
 *    (the simulator answers both at once): requests/s, p50 and p99.
 * 2. The delay Butler adds to each streamed chunk. The stamping upstream
 *    writes the wall-clock time at which it sends each NDJSON chunk into the
 *    chunk; the client notes when the chunk arrives. Arrival minus send is
 *    the chunk's one-way latency; both processes read the same system
 *    clock, and any offset between their clocks is the same for direct and
 *    Butler runs, so it cancels in the difference. Measured with one stream
 *    at a time and with several concurrent streams.
 * 3. Time to the first token and to the last, streaming through the
 *    simulator: what a user sees, request handling included.
 *
 * Bounded: each wrk run lasts `--seconds` (at most 10), streams are counted,
 * and the whole run stops itself after 3 minutes.
 *
 * @module
 */

import {
  BENCH_KEY,
  freePort,
  type Service,
  startButlerProcess,
  startSimulator,
  waitForPort,
} from "./lib/procs.ts";
import { runWrk, type WrkResult } from "./lib/wrk.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const HARD_LIMIT_MS = 180_000;

/** Butler's policy for the core path: one key, allow and deny rules. */
const CORE_CONFIG = `listen: 127.0.0.1:{{PORT}}
upstream: {{UPSTREAM}}
upstream_timeout: 1m
clients:
  - name: bench
    key: ${BENCH_KEY}
    allow_models: ["llama3.2", "qwen2.5:7b"]
    deny_models: ["llama3.2:1b"]
`;

const CHAT_BODY = JSON.stringify({
  model: "llama3.2",
  messages: [{ role: "user", content: "hello" }],
  stream: false,
});

/** Wall-clock time in microseconds, comparable between processes. */
function wallMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

// ---------------------------------------------------------------------------
// The stamping upstream (child process mode).

/**
 * Serves `GET /api/version` and `POST /api/chat` as NDJSON whose chunks
 * carry `sent_us`, the wall-clock microsecond at which each was enqueued.
 */
function serveStampingUpstream(
  options: { port: number; chunks: number; chunkDelayMs: number },
) {
  const encoder = new TextEncoder();
  Deno.serve({
    hostname: "127.0.0.1",
    port: options.port,
    onListen: () => {},
  }, async (request) => {
    const { pathname } = new URL(request.url);
    if (pathname === "/api/version") {
      return Response.json({ version: "0.13.0" });
    }
    if (pathname !== "/api/chat" || request.method !== "POST") {
      return new Response("404 page not found", { status: 404 });
    }
    await request.arrayBuffer();
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        for (let i = 0; i <= options.chunks && !cancelled; i++) {
          await new Promise((r) => setTimeout(r, options.chunkDelayMs));
          if (cancelled) return;
          const done = i === options.chunks;
          const chunk = {
            model: "llama3.2",
            message: { role: "assistant", content: done ? "" : " token" },
            done,
            sent_us: wallMicros(),
          };
          controller.enqueue(encoder.encode(JSON.stringify(chunk) + "\n"));
        }
        controller.close();
      },
      cancel() {
        cancelled = true;
      },
    });
    return new Response(body, {
      headers: { "content-type": "application/x-ndjson" },
    });
  });
}

async function startStampingUpstream(
  options: { chunks: number; chunkDelayMs: number },
): Promise<Service> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-lock",
      `--allow-net=127.0.0.1:${port}`,
      "bench/core_bench.ts",
      "--stamping-upstream",
      String(port),
      "--chunks",
      String(options.chunks),
      "--chunk-delay-ms",
      String(options.chunkDelayMs),
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  await waitForPort(port, { name: "stamping upstream" });
  return {
    name: "stamping upstream",
    pid: child.pid,
    port,
    url: `http://127.0.0.1:${port}`,
    stderr: () => "",
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      await child.status;
    },
  };
}

// ---------------------------------------------------------------------------
// Measurements.

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(
    sorted.length - 1,
    Math.max(0, Math.ceil((p / 100) * sorted.length) - 1),
  );
  return sorted[index];
}

function sortedCopy(values: readonly number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

/**
 * Streams one chat and returns, per NDJSON line, arrival minus `sent_us`
 * (microseconds). Lines that arrive in the same read share its time.
 */
async function chunkLatencies(url: string): Promise<number[]> {
  const response = await fetch(`${url}/api/chat`, {
    method: "POST",
    headers: { authorization: `Bearer ${BENCH_KEY}` },
    body: JSON.stringify({
      model: "llama3.2",
      messages: [{ role: "user", content: "hi" }],
    }),
  });
  if (response.status !== 200) {
    throw new Error(`${url}/api/chat answered ${response.status}`);
  }
  const latencies: number[] = [];
  const decoder = new TextDecoder();
  let rest = "";
  for await (const bytes of response.body!) {
    const arrived = wallMicros();
    const lines = (rest + decoder.decode(bytes, { stream: true })).split("\n");
    rest = lines.pop()!;
    for (const line of lines) {
      if (line === "") continue;
      latencies.push(arrived - JSON.parse(line).sent_us);
    }
  }
  return latencies;
}

interface StreamTimes {
  /** Milliseconds from sending the request to the first content chunk. */
  readonly firstMs: number;
  /** Milliseconds from sending the request to the end of the stream. */
  readonly lastMs: number;
}

async function streamTimes(url: string): Promise<StreamTimes> {
  const start = performance.now();
  const response = await fetch(`${url}/api/chat`, {
    method: "POST",
    headers: { authorization: `Bearer ${BENCH_KEY}` },
    body: JSON.stringify({
      model: "llama3.2",
      messages: [{ role: "user", content: "hi" }],
    }),
  });
  if (response.status !== 200) {
    throw new Error(`${url}/api/chat answered ${response.status}`);
  }
  let firstMs = NaN;
  for await (const _ of response.body!) {
    if (Number.isNaN(firstMs)) firstMs = performance.now() - start;
  }
  return { firstMs, lastMs: performance.now() - start };
}

/** Runs `count` rounds of `concurrency` parallel calls of `fn`. */
async function rounds<T>(
  count: number,
  concurrency: number,
  fn: () => Promise<T>,
): Promise<T[]> {
  const results: T[] = [];
  for (let i = 0; i < count; i++) {
    results.push(
      ...await Promise.all(Array.from({ length: concurrency }, fn)),
    );
  }
  return results;
}

// ---------------------------------------------------------------------------
// Report.

interface Row {
  readonly what: string;
  readonly unit: string;
  readonly direct: number;
  readonly butler: number;
}

function formatNumber(value: number): string {
  if (!Number.isFinite(value)) return "n/a";
  if (Math.abs(value) >= 1000) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

function table(rows: readonly Row[]): string {
  const header = [
    "measurement",
    "unit",
    "direct",
    "via Butler",
    "butler/direct",
  ];
  const body = rows.map((row) => [
    row.what,
    row.unit,
    formatNumber(row.direct),
    formatNumber(row.butler),
    `${(row.butler / row.direct).toFixed(2)}x`,
  ]);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...body.map((cells) => cells[i].length))
  );
  const line = (cells: string[]) =>
    `| ${
      cells.map((c, i) => i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))
        .join(" | ")
    } |`;
  return [
    line(header),
    `|${
      widths.map((w, i) =>
        (i < 2 ? "-" : "") + "-".repeat(w) + (i < 2 ? "-" : ":")
      ).join("|")
    }|`,
    ...body.map(line),
  ].join("\n");
}

function wrkRows(label: string, direct: WrkResult, butler: WrkResult): Row[] {
  for (
    const [who, result] of [["direct", direct], ["Butler", butler]] as const
  ) {
    if (result.errors > 0 || result.non2xx > 0) {
      throw new Error(
        `${label} ${who}: ${result.errors} socket errors, ` +
          `${result.non2xx} non-2xx answers`,
      );
    }
  }
  return [
    {
      what: `${label}: throughput`,
      unit: "req/s",
      direct: direct.rps,
      butler: butler.rps,
    },
    {
      what: `${label}: p50`,
      unit: "ms",
      direct: direct.p50,
      butler: butler.p50,
    },
    {
      what: `${label}: p99`,
      unit: "ms",
      direct: direct.p99,
      butler: butler.p99,
    },
  ];
}

// ---------------------------------------------------------------------------
// Main.

interface Options {
  seconds: number;
  connections: number;
  streams: number;
}

function parseOptions(args: readonly string[]): Options {
  const options: Options = { seconds: 5, connections: 32, streams: 20 };
  const limits: Record<keyof Options, number> = {
    seconds: 10,
    connections: 256,
    streams: 200,
  };
  for (let i = 0; i < args.length; i += 2) {
    const name = args[i].replace(/^--/, "") as keyof Options;
    const value = Number(args[i + 1]);
    if (!(name in options)) {
      throw new RangeError(`unknown argument ${JSON.stringify(args[i])}`);
    }
    if (!Number.isInteger(value) || value < 1 || value > limits[name]) {
      throw new RangeError(
        `--${name}: "${args[i + 1]}" is not a whole number from 1 to ${
          limits[name]
        }`,
      );
    }
    options[name] = value;
  }
  return options;
}

async function main(options: Options) {
  const started: Service[] = [];
  const watchdog = setTimeout(() => {
    console.error(`core_bench: over ${HARD_LIMIT_MS / 1000} s; stopping`);
    Promise.all(started.map((s) => s.stop())).finally(() => Deno.exit(1));
  }, HARD_LIMIT_MS);

  try {
    const sim = await startSimulator({ chunks: 10, chunkDelayMs: 2 });
    started.push(sim);
    const butler = await startButlerProcess({
      upstream: sim.url,
      config: CORE_CONFIG.replace("{{UPSTREAM}}", sim.url),
    });
    started.push(butler);
    const stamping = await startStampingUpstream({
      chunks: 20,
      chunkDelayMs: 5,
    });
    started.push(stamping);
    const stampingButler = await startButlerProcess({
      upstream: stamping.url,
      config: CORE_CONFIG.replace("{{UPSTREAM}}", stamping.url),
    });
    started.push(stampingButler);

    const rows: Row[] = [];
    const headers = { authorization: `Bearer ${BENCH_KEY}` };
    const wrk = (url: string, extra: Partial<Parameters<typeof runWrk>[0]>) =>
      runWrk({
        url,
        connections: options.connections,
        seconds: options.seconds,
        headers,
        ...extra,
      });
    const chatRequest = {
      method: "POST",
      body: CHAT_BODY,
      headers: { ...headers, "content-type": "application/json" },
    };

    // Warm both paths (JIT, keep-alive pools) before measuring.
    await wrk(`${sim.url}/api/version`, { seconds: 1 });
    await wrk(`${butler.url}/api/version`, { seconds: 1 });

    // 1. Small non-streamed requests.
    const c = options.connections;
    rows.push(...wrkRows(
      `GET /api/version, c=${c}`,
      await wrk(`${sim.url}/api/version`, {}),
      await wrk(`${butler.url}/api/version`, {}),
    ));
    rows.push(...wrkRows(
      `GET /api/version, c=1`,
      await wrk(`${sim.url}/api/version`, { connections: 1 }),
      await wrk(`${butler.url}/api/version`, { connections: 1 }),
    ));
    rows.push(...wrkRows(
      `POST /api/chat stream:false, c=${c}`,
      await wrk(`${sim.url}/api/chat`, chatRequest),
      await wrk(`${butler.url}/api/chat`, chatRequest),
    ));

    // 2. Per-chunk delay, one stream at a time, then 16 at once. Direct and
    // Butler rounds alternate so that both see the same machine state.
    await rounds(3, 1, () => chunkLatencies(stampingButler.url));
    for (const concurrency of [1, 16]) {
      const direct: number[] = [];
      const via: number[] = [];
      const count = Math.max(1, Math.ceil(options.streams / concurrency));
      for (let i = 0; i < count; i++) {
        direct.push(
          ...(await rounds(1, concurrency, () => chunkLatencies(stamping.url)))
            .flat(),
        );
        via.push(
          ...(await rounds(
            1,
            concurrency,
            () => chunkLatencies(stampingButler.url),
          )).flat(),
        );
      }
      const d = sortedCopy(direct);
      const b = sortedCopy(via);
      const label = `chunk latency, ${concurrency} stream${
        concurrency > 1 ? "s" : ""
      }`;
      rows.push(
        {
          what: `${label}: p50`,
          unit: "ms",
          direct: percentile(d, 50) / 1000,
          butler: percentile(b, 50) / 1000,
        },
        {
          what: `${label}: p99`,
          unit: "ms",
          direct: percentile(d, 99) / 1000,
          butler: percentile(b, 99) / 1000,
        },
      );
      console.error(
        `${label}: ${d.length} chunks each; added p50 ` +
          `${((percentile(b, 50) - percentile(d, 50)) / 1000).toFixed(3)} ms`,
      );
    }

    // 3. Time to first and last token through the simulator.
    const direct: StreamTimes[] = [];
    const via: StreamTimes[] = [];
    for (let i = 0; i < options.streams; i++) {
      direct.push(await streamTimes(sim.url));
      via.push(await streamTimes(butler.url));
    }
    const median = (xs: number[]) => percentile(sortedCopy(xs), 50);
    rows.push(
      {
        what: "stream via simulator: first chunk p50",
        unit: "ms",
        direct: median(direct.map((t) => t.firstMs)),
        butler: median(via.map((t) => t.firstMs)),
      },
      {
        what: "stream via simulator: whole stream p50",
        unit: "ms",
        direct: median(direct.map((t) => t.lastMs)),
        butler: median(via.map((t) => t.lastMs)),
      },
    );

    console.log(
      `core_bench: Deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores, ` +
        `wrk -t1 ${options.seconds}s per run, loopback; ` +
        `simulator 10 chunks 2 ms apart, stamping upstream 20 chunks 5 ms apart`,
    );
    console.log(table(rows));
  } finally {
    clearTimeout(watchdog);
    await Promise.all(started.map((s) => s.stop()));
  }
}

if (import.meta.main) {
  const index = Deno.args.indexOf("--stamping-upstream");
  if (index >= 0) {
    const value = (name: string) =>
      Number(Deno.args[Deno.args.indexOf(name) + 1]);
    serveStampingUpstream({
      port: Number(Deno.args[index + 1]),
      chunks: value("--chunks"),
      chunkDelayMs: value("--chunk-delay-ms"),
    });
  } else {
    await main(parseOptions(Deno.args));
  }
}
