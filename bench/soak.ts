/**
 * Soak: Butler (a child process, started with the flags `main.ts
 * permissions` prints) in front of the Ollama simulator (a child process),
 * under mixed traffic for a while: small requests, streamed and
 * non-streamed chats, streams the client abandons after the first chunk,
 * OpenAI-style SSE streams, and the upstream killed and restarted halfway.
 * Resident memory and open file descriptors of Butler are compared between
 * the end of a warm-up and the end of the run; Butler's stderr must hold no
 * uncaught error or unhandled rejection.
 *
 *   deno run -A bench/soak.ts [--seconds 60] [--workers 16]
 *
 * `tests/soak_test.ts` runs a short one.
 *
 * @module
 */

import {
  BENCH_KEY,
  freePort,
  openFds,
  rssBytes,
  type Service,
  startButlerProcess,
  startSimulator,
} from "./lib/procs.ts";

/** Options for {@linkcode runSoak}. */
export interface SoakOptions {
  /** Length of the measured run (the warm-up adds a fifth of it, 2–10 s). */
  readonly seconds: number;
  /** Concurrent clients. Default 16. */
  readonly workers?: number;
}

/** What a soak run saw. */
export interface SoakReport {
  readonly seconds: number;
  readonly workers: number;
  /** Requests by outcome: `ok`, `abandoned`, `upstream_down`, `failed`. */
  readonly outcomes: Record<string, number>;
  /** Butler's resident memory after the warm-up, at the end, and the peak. */
  readonly rss: { start: number; end: number; peak: number };
  /** Butler's open file descriptors after the warm-up and at the end. */
  readonly fds: { start: number; end: number };
  /** Lines of Butler's stderr that report an uncaught error. */
  readonly uncaught: string[];
  /** Whether the upstream restart happened. */
  readonly restarted: boolean;
}

const AUTH = {
  authorization: `Bearer ${BENCH_KEY}`,
  "content-type": "application/json",
};

function chat(stream: boolean): string {
  return JSON.stringify({
    model: "llama3.2",
    stream,
    messages: [{ role: "user", content: "tell me a story" }],
  });
}

type Outcome = "ok" | "abandoned" | "upstream_down" | "failed";

/** One request of the mix, chosen by `roll` in [0, 1). */
async function oneRequest(url: string, roll: number): Promise<Outcome> {
  const signal = AbortSignal.timeout(15_000);
  if (roll < 0.3) {
    const response = await fetch(`${url}/api/version`, {
      headers: AUTH,
      signal,
    });
    await response.arrayBuffer();
    return statusOutcome(response.status);
  }
  if (roll < 0.5) {
    const response = await fetch(`${url}/api/chat`, {
      method: "POST",
      headers: AUTH,
      body: chat(false),
      signal,
    });
    await response.arrayBuffer();
    return statusOutcome(response.status);
  }
  if (roll < 0.7) {
    const response = await fetch(`${url}/api/chat`, {
      method: "POST",
      headers: AUTH,
      body: chat(true),
      signal,
    });
    const text = await response.text();
    if (response.status !== 200) return statusOutcome(response.status);
    return text.includes('"error"') ? "upstream_down" : "ok";
  }
  if (roll < 0.85) {
    // The client hangs up after the first chunk.
    const response = await fetch(`${url}/api/chat`, {
      method: "POST",
      headers: AUTH,
      body: chat(true),
      signal,
    });
    if (response.status !== 200) {
      await response.body?.cancel();
      return statusOutcome(response.status);
    }
    const reader = response.body!.getReader();
    await reader.read();
    await reader.cancel();
    return "abandoned";
  }
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: AUTH,
    body: chat(true),
    signal,
  });
  const text = await response.text();
  if (response.status !== 200) return statusOutcome(response.status);
  return text.includes("[DONE]") ? "ok" : "upstream_down";
}

function statusOutcome(status: number): Outcome {
  if (status === 200) return "ok";
  if (status === 502 || status === 504) return "upstream_down";
  return "failed";
}

async function traffic(
  url: string,
  options: { workers: number; until: number; outcomes: Map<string, number> },
): Promise<void> {
  const { outcomes } = options;
  await Promise.all(
    Array.from({ length: options.workers }, async () => {
      while (Date.now() < options.until) {
        let outcome: Outcome;
        try {
          outcome = await oneRequest(url, Math.random());
        } catch {
          // A stream broken while the upstream restarts, seen by the client.
          outcome = "upstream_down";
        }
        outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      }
    }),
  );
}

const UNCAUGHT = /uncaught|unhandled|panicked|error: /i;

/** Runs one soak and returns what it saw; stops everything it started. */
export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  if (!(options.seconds >= 1 && options.seconds <= 3600)) {
    throw new RangeError(
      `seconds: ${options.seconds} is not allowed; use 1 to 3600`,
    );
  }
  const workers = options.workers ?? 16;
  const simOptions = { chunks: 8, chunkDelayMs: 5 };
  const simPort = freePort();
  let sim: Service = await startSimulator({ port: simPort, ...simOptions });
  const butler = await startButlerProcess({ upstream: sim.url });
  const outcomes = new Map<string, number>();
  let peak = 0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, rssBytes(butler.pid));
  }, 250);
  let restarted = false;
  try {
    const warmup = Math.min(10, Math.max(2, options.seconds / 5));
    await traffic(butler.url, {
      workers,
      until: Date.now() + warmup * 1000,
      outcomes: new Map(),
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const start = { rss: rssBytes(butler.pid), fds: openFds(butler.pid) };

    const until = Date.now() + options.seconds * 1000;
    const restart = (async () => {
      await new Promise((resolve) =>
        setTimeout(resolve, (options.seconds * 1000) / 2)
      );
      Deno.kill(sim.pid, "SIGKILL");
      await sim.stop();
      await new Promise((resolve) => setTimeout(resolve, 300));
      sim = await startSimulator({ port: simPort, ...simOptions });
      restarted = true;
    })();
    await traffic(butler.url, { workers, until, outcomes });
    await restart;

    // Let closed connections and timers settle before the last sample.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const end = { rss: rssBytes(butler.pid), fds: openFds(butler.pid) };
    const uncaught = butler.stderr().split("\n").filter((line) =>
      UNCAUGHT.test(line)
    );
    return {
      seconds: options.seconds,
      workers,
      outcomes: Object.fromEntries(outcomes),
      rss: { start: start.rss, end: end.rss, peak },
      fds: { start: start.fds, end: end.fds },
      uncaught,
      restarted,
    };
  } finally {
    clearInterval(sampler);
    await butler.stop();
    await sim.stop();
  }
}

function readFlags(args: readonly string[]): SoakOptions {
  let seconds = 60;
  let workers = 16;
  for (let i = 0; i < args.length; i++) {
    const value = Number(args[i + 1]);
    if (args[i] === "--seconds") seconds = value;
    else if (args[i] === "--workers") workers = value;
    else throw new RangeError(`unknown argument "${args[i]}"`);
    i++;
  }
  if (!Number.isInteger(workers) || workers < 1 || workers > 512) {
    throw new RangeError(`--workers: ${workers} is not a whole number 1–512`);
  }
  return { seconds, workers };
}

if (import.meta.main) {
  const report = await runSoak(readFlags(Deno.args));
  const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
  console.log(JSON.stringify(report, null, 1));
  console.log(
    `RSS ${mb(report.rss.start)} MB -> ${mb(report.rss.end)} MB ` +
      `(peak ${mb(report.rss.peak)} MB); fds ${report.fds.start} -> ` +
      `${report.fds.end}; uncaught errors: ${report.uncaught.length}`,
  );
  const file = new URL(
    `./results/soak-${new Date().toISOString().replaceAll(":", "-")}.json`,
    import.meta.url,
  );
  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(file, JSON.stringify(report, null, 1));
}
