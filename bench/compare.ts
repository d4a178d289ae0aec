/**
 * Butler against nginx and direct, in one run, on loopback:
 *
 *   deno run -A bench/compare.ts [--seconds 4] [--streams 2000] [--quick]
 *
 * Every server is a child process: the Ollama simulator
 * (`tests/sim/run_sim.ts`), nginx as a plain streaming reverse proxy (one
 * worker, keep-alive upstream, `proxy_buffering off`), a bare Deno `fetch`
 * proxy with no policy (the platform's floor), and Butler under a realistic
 * policy (key auth, model rules, a rate limit far above the load, five
 * prompt patterns, a generation cap) started with exactly the flags
 * `main.ts permissions` prints. The load generator is `wrk` for small
 * requests and this process for streams.
 *
 * Measured, for each path:
 *
 * 1. Saturation: `wrk -t1 -c32` on `GET /api/version` and a short
 *    `POST /api/chat` with `"stream": false`; requests/s, p50, p99. Two
 *    rounds, paths interleaved, best round kept (the machine may be shared).
 * 2. Fixed offered load at half of Butler's saturation rate: wrk 4 has no
 *    rate option (wrk2 is not installed), so each connection waits a fixed
 *    `delay()` of 20 ms between requests; with `c` connections the offered
 *    rate is about `c × 1000 / (20 + latency)`. The rate actually achieved
 *    is reported next to the latencies. The "added" latency is the path's
 *    minus direct's at the same offered load.
 * 3. Streams: the delay added to each chunk (a time-stamping upstream,
 *    `bench/lib/stamp_upstream.ts`, 1 and 50 concurrent streams), and the
 *    time to the first byte of a streamed chat from the simulator.
 * 4. 2,000 concurrent slow streams held open: resident memory (VmRSS) of
 *    each proxy and its CPU use over 5 s while they flow.
 * 5. Large bodies (1, 8, 32 MB of JSON with a base64 image): the time Butler
 *    adds over direct and Butler's peak resident memory (VmHWM, reset before
 *    each body).
 *
 * Raw results go to `bench/results/compare-<time>.json`; a table is printed.
 * Bounded: every wrk run lasts `--seconds`, stream counts are fixed, and the
 * whole run stops itself after 8 minutes.
 *
 * @module
 */

import {
  BENCH_KEY,
  cpuSeconds,
  rssBytes,
  type Service,
  startBareProxy,
  startButlerProcess,
  startNginx,
  startSimulator,
  startStampUpstream,
} from "./lib/procs.ts";
import { runWrk, type WrkResult } from "./lib/wrk.ts";
import {
  chunkLatencies,
  openSlowStreams,
  percentile,
  timeToFirstByte,
} from "./lib/streams.ts";

interface Flags {
  seconds: number;
  streams: number;
  quick: boolean;
}

function readFlags(args: readonly string[]): Flags {
  const flags: Flags = { seconds: 4, streams: 2000, quick: false };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--quick") flags.quick = true;
    else if (arg === "--seconds" || arg === "--streams") {
      const value = Number(args[++i]);
      if (!Number.isInteger(value) || value < 1) {
        throw new RangeError(`${arg}: "${args[i]}" is not a whole number >= 1`);
      }
      if (arg === "--seconds" && value > 30) {
        throw new RangeError(`--seconds: ${value} is over the bound of 30`);
      }
      if (arg === "--streams" && value > 5000) {
        throw new RangeError(`--streams: ${value} is over the bound of 5000`);
      }
      flags[arg === "--seconds" ? "seconds" : "streams"] = value;
    } else {
      throw new RangeError(`unknown argument "${arg}"`);
    }
  }
  if (flags.quick) {
    flags.seconds = Math.min(flags.seconds, 2);
    flags.streams = Math.min(flags.streams, 200);
  }
  return flags;
}

const AUTH = { authorization: `Bearer ${BENCH_KEY}` };
const SMALL_CHAT = JSON.stringify({
  model: "llama3.2",
  stream: false,
  messages: [{ role: "user", content: "hello there" }],
});

type PathName = "direct" | "nginx" | "bare" | "butler";
const PATHS: readonly PathName[] = ["direct", "nginx", "bare", "butler"];

interface SmallRequest {
  readonly name: "version" | "chat";
  readonly path: string;
  readonly method: string;
  readonly body?: string;
}

const SMALL: readonly SmallRequest[] = [
  { name: "version", path: "/api/version", method: "GET" },
  { name: "chat", path: "/api/chat", method: "POST", body: SMALL_CHAT },
];

function wrkFor(
  service: Service,
  request: SmallRequest,
  options: { connections: number; seconds: number; delayMs?: number },
): Promise<WrkResult> {
  return runWrk({
    url: service.url + request.path,
    method: request.method,
    body: request.body,
    headers: { ...AUTH, "content-type": "application/json" },
    ...options,
  });
}

async function withDeadline<T>(ms: number, run: () => Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`benchmark over its ${ms / 1000} s bound`)),
      ms,
    );
  });
  try {
    return await Promise.race([run(), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

function machine() {
  const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? "unknown";
  const nginx = new Deno.Command("/usr/sbin/nginx", { args: ["-v"] })
    .outputSync();
  return {
    cpus: navigator.hardwareConcurrency,
    cpu_model: model,
    kernel: Deno.osRelease(),
    memory_bytes: Deno.systemMemoryInfo().total,
    deno: Deno.version.deno,
    nginx: new TextDecoder().decode(nginx.stderr).trim(),
    wrk: "4 (debian)",
    load_average_at_start: Deno.loadavg(),
  };
}

// --- 1 and 2: small requests ---------------------------------------------

async function smallRequests(
  services: Record<PathName, Service>,
  flags: Flags,
) {
  const saturation: Record<string, Record<PathName, WrkResult>> = {};
  const halfLoad: Record<string, Record<PathName, WrkResult>> = {};
  for (const request of SMALL) {
    const best = {} as Record<PathName, WrkResult>;
    for (const path of PATHS) {
      await wrkFor(services[path], request, { connections: 32, seconds: 1 });
    }
    for (let round = 0; round < 2; round++) {
      for (const path of PATHS) {
        const result = await wrkFor(services[path], request, {
          connections: 32,
          seconds: flags.seconds,
        });
        if (result.non2xx > 0 || result.errors > 0) {
          throw new Error(
            `${path} ${request.name}: ${result.non2xx} non-2xx, ` +
              `${result.errors} socket errors`,
          );
        }
        if (best[path] === undefined || result.rps > best[path].rps) {
          best[path] = result;
        }
      }
    }
    saturation[request.name] = best;

    // Half of Butler's saturation rate, offered to every path.
    const target = best.butler.rps / 2;
    const delayMs = 20;
    const connections = Math.max(1, Math.round((target * delayMs) / 1000));
    const half = {} as Record<PathName, WrkResult>;
    for (const path of PATHS) {
      half[path] = await wrkFor(services[path], request, {
        connections,
        seconds: flags.seconds,
        delayMs,
      });
    }
    halfLoad[request.name] = half;
  }
  return { saturation, halfLoad };
}

// --- 3: streams ------------------------------------------------------------

async function streamDelays(flags: Flags) {
  const stamp = await startStampUpstream();
  const nginx = await startNginx(stamp.port);
  const bare = await startBareProxy(stamp.url);
  const butler = await startButlerProcess({ upstream: stamp.url });
  const services: Record<PathName, Service> = {
    direct: stamp,
    nginx,
    bare,
    butler,
  };
  const results: Record<string, Record<PathName, number[]>> = {};
  try {
    for (const streams of [1, 50]) {
      const byPath = {} as Record<PathName, number[]>;
      for (const path of PATHS) {
        // Warm the connection pool, then measure.
        await chunkLatencies(services[path].url, {
          streams,
          chunks: 5,
          intervalMs: 10,
          headers: AUTH,
        });
        byPath[path] = await chunkLatencies(services[path].url, {
          streams,
          chunks: flags.quick ? 20 : 100,
          intervalMs: 10,
          headers: AUTH,
        });
      }
      results[`${streams}_streams`] = byPath;
    }
  } finally {
    await butler.stop();
    await bare.stop();
    await nginx.stop();
    await stamp.stop();
  }
  return results;
}

async function firstBytes(services: Record<PathName, Service>, flags: Flags) {
  const results = {} as Record<
    PathName,
    { headers: number[]; firstByte: number[] }
  >;
  for (const path of PATHS) {
    await timeToFirstByte(services[path].url, { count: 20, headers: AUTH });
    results[path] = await timeToFirstByte(services[path].url, {
      count: flags.quick ? 50 : 300,
      headers: AUTH,
    });
  }
  return results;
}

// --- 4: many slow streams --------------------------------------------------

interface HeldStreams {
  opened: number;
  flowing: number;
  failed: number;
  proxy_rss_bytes: number;
  proxy_rss_before_bytes: number;
  proxy_cpu_percent: number;
  upstream_rss_bytes: number;
}

async function manyStreams(flags: Flags) {
  const results: Partial<Record<PathName, HeldStreams>> = {};
  for (const path of PATHS) {
    // A fresh upstream per path: 60 chunks, one every 500 ms (30 s streams).
    const sim = await startSimulator({ chunks: 60, chunkDelayMs: 500 });
    const proxy = path === "direct"
      ? sim
      : path === "nginx"
      ? await startNginx(sim.port)
      : path === "bare"
      ? await startBareProxy(sim.url)
      : await startButlerProcess({ upstream: sim.url });
    try {
      const before = rssBytes(proxy.pid);
      const streams = await openSlowStreams(proxy.url, {
        count: flags.streams,
        batch: 200,
        headers: AUTH,
      });
      const deadline = Date.now() + 15_000;
      while (
        streams.flowing() + streams.failed() < flags.streams &&
        Date.now() < deadline
      ) {
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const cpuStart = cpuSeconds(proxy.pid);
      await new Promise((resolve) => setTimeout(resolve, 5000));
      const cpu = (cpuSeconds(proxy.pid) - cpuStart) / 5;
      results[path] = {
        opened: flags.streams,
        flowing: streams.flowing(),
        failed: streams.failed(),
        proxy_rss_bytes: rssBytes(proxy.pid),
        proxy_rss_before_bytes: before,
        proxy_cpu_percent: cpu * 100,
        upstream_rss_bytes: rssBytes(sim.pid),
      };
      await streams.close();
    } finally {
      if (proxy !== sim) await proxy.stop();
      await sim.stop();
    }
  }
  return results;
}

// --- 5: large bodies -------------------------------------------------------

function peakRss(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? NaN) * 1024;
}

function resetPeakRss(pid: number): void {
  // "5" resets the peak resident set size (VmHWM) to the current one.
  Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
}

function imageBody(megabytes: number): Uint8Array<ArrayBuffer> {
  const base64Length = megabytes * 1024 * 1024 - 200;
  const image = "iVBORw0KGgo".padEnd(base64Length, "A");
  return new TextEncoder().encode(JSON.stringify({
    model: "llama3.2",
    stream: false,
    messages: [{ role: "user", content: "describe", images: [image] }],
  }));
}

async function largeBodies(
  services: Record<PathName, Service>,
  flags: Flags,
): Promise<Record<string, LargeBody>> {
  const results: Record<string, LargeBody> = {};
  const butlerPid = services.butler.pid;
  for (const megabytes of flags.quick ? [1, 8] : [1, 8, 32]) {
    const body = imageBody(megabytes);
    const times: Record<"direct" | "butler", number[]> = {
      direct: [],
      butler: [],
    };
    let peak = 0;
    const rounds = 3;
    for (let round = 0; round < rounds; round++) {
      for (const path of ["direct", "butler"] as const) {
        if (path === "butler") resetPeakRss(butlerPid);
        const before = rssBytes(butlerPid);
        const start = performance.now();
        const response = await fetch(services[path].url + "/api/chat", {
          method: "POST",
          headers: { ...AUTH, "content-type": "application/json" },
          body,
        });
        await response.arrayBuffer();
        times[path].push(performance.now() - start);
        if (response.status !== 200) {
          throw new Error(`${path} ${megabytes} MB: ${response.status}`);
        }
        if (path === "butler") {
          peak = Math.max(peak, peakRss(butlerPid) - before);
        }
      }
    }
    const median = (values: number[]) => percentile(values, 50);
    results[`${megabytes}MB`] = {
      bytes: body.byteLength,
      direct_ms: median(times.direct),
      butler_ms: median(times.butler),
      added_ms: median(times.butler) - median(times.direct),
      butler_peak_rss_growth_bytes: peak,
    };
  }
  return results;
}

// --- report ----------------------------------------------------------------

function fixed(value: number, digits = 2): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "-";
}

interface LargeBody {
  bytes: number;
  direct_ms: number;
  butler_ms: number;
  added_ms: number;
  butler_peak_rss_growth_bytes: number;
}

/** Everything one run measured; saved as JSON. */
interface Report {
  started: string;
  flags: Flags;
  machine: ReturnType<typeof machine>;
  small: Awaited<ReturnType<typeof smallRequests>>;
  firstByte: Awaited<ReturnType<typeof firstBytes>>;
  largeBodies: Record<string, LargeBody>;
  chunks: Record<string, Record<PathName, number[]>>;
  manyStreams: Partial<Record<PathName, HeldStreams>>;
}

function printReport(report: Report): void {
  const out: string[] = [];
  const { saturation, halfLoad } = report.small;
  out.push(
    `machine: ${report.machine.cpus} CPUs (${report.machine.cpu_model}), ` +
      `load average at start ${report.machine.load_average_at_start.join(" ")}`,
  );
  out.push("");
  out.push("small requests at saturation (wrk -t1 -c32):");
  out.push(
    "| request | path | req/s | × nginx | p50 ms | p99 ms |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
  );
  for (const name of Object.keys(saturation)) {
    for (const path of PATHS) {
      const r = saturation[name][path];
      out.push(
        `| ${name} | ${path} | ${Math.round(r.rps)} | ${
          fixed(r.rps / saturation[name].nginx.rps)
        } | ${fixed(r.p50)} | ${fixed(r.p99)} |`,
      );
    }
  }
  out.push("");
  out.push("small requests at half of Butler's saturation rate:");
  out.push(
    "| request | path | offered≈ req/s | achieved req/s | p50 ms | p99 ms | added p99 ms |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
  );
  for (const name of Object.keys(halfLoad)) {
    for (const path of PATHS) {
      const r = halfLoad[name][path];
      out.push(
        `| ${name} | ${path} | ${
          Math.round(saturation[name].butler.rps / 2)
        } | ${Math.round(r.rps)} | ${fixed(r.p50)} | ${fixed(r.p99)} | ${
          fixed(r.p99 - halfLoad[name].direct.p99)
        } |`,
      );
    }
  }
  out.push("");
  out.push(
    "per-chunk one-way latency (time-stamped NDJSON chunks every 10 ms):",
  );
  out.push(
    "| streams | path | p50 ms | p99 ms | added p50 ms | added p99 ms |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
  );
  for (const key of Object.keys(report.chunks)) {
    const byPath = report.chunks[key];
    const direct50 = percentile(byPath.direct, 50);
    const direct99 = percentile(byPath.direct, 99);
    for (const path of PATHS) {
      const p50 = percentile(byPath[path], 50);
      const p99 = percentile(byPath[path], 99);
      out.push(
        `| ${key.split("_")[0]} | ${path} | ${fixed(p50, 3)} | ${
          fixed(p99, 3)
        } | ${fixed(p50 - direct50, 3)} | ${fixed(p99 - direct99, 3)} |`,
      );
    }
  }
  out.push("");
  out.push("time to first byte of a streamed chat (simulator, sequential):");
  out.push(
    "| path | p50 ms | p99 ms |",
    "| --- | ---: | ---: |",
  );
  for (const path of PATHS) {
    const t = report.firstByte[path].firstByte;
    out.push(
      `| ${path} | ${fixed(percentile(t, 50), 3)} | ${
        fixed(percentile(t, 99), 3)
      } |`,
    );
  }
  out.push("");
  out.push(`${report.flags.streams} slow streams held open:`);
  out.push(
    "| path | flowing | failed | RSS MB | RSS before MB | CPU % |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
  );
  for (const path of PATHS) {
    const r = report.manyStreams[path];
    if (r === undefined) continue;
    out.push(
      `| ${path} | ${r.flowing} | ${r.failed} | ${
        fixed(r.proxy_rss_bytes / 2 ** 20, 1)
      } | ${fixed(r.proxy_rss_before_bytes / 2 ** 20, 1)} | ${
        fixed(r.proxy_cpu_percent, 1)
      } |`,
    );
  }
  out.push("");
  out.push("large bodies (POST /api/chat, one base64 image):");
  out.push(
    "| size | direct ms | Butler ms | added ms | Butler peak RSS growth MB |",
    "| --- | ---: | ---: | ---: | ---: |",
  );
  for (const [size, r] of Object.entries(report.largeBodies)) {
    out.push(
      `| ${size} | ${fixed(r.direct_ms, 1)} | ${fixed(r.butler_ms, 1)} | ${
        fixed(r.added_ms, 1)
      } | ${fixed(r.butler_peak_rss_growth_bytes / 2 ** 20, 1)} |`,
    );
  }
  console.log(out.join("\n"));
}

async function main(flags: Flags): Promise<void> {
  const report = {
    started: new Date().toISOString(),
    flags,
    machine: machine(),
  } as Report;
  const sim = await startSimulator({ chunks: 5, chunkDelayMs: 0 });
  const services: Record<PathName, Service> = {
    direct: sim,
    nginx: await startNginx(sim.port),
    bare: await startBareProxy(sim.url),
    butler: await startButlerProcess({ upstream: sim.url }),
  };
  try {
    console.error("small requests...");
    report.small = await smallRequests(services, flags);
    console.error("time to first byte...");
    report.firstByte = await firstBytes(services, flags);
    console.error("large bodies...");
    report.largeBodies = await largeBodies(services, flags);
  } finally {
    for (const path of ["butler", "bare", "nginx"] as const) {
      await services[path].stop();
    }
    const stderr = services.butler.stderr();
    if (stderr.trim() !== "") console.error(`butler stderr:\n${stderr}`);
    await sim.stop();
  }
  console.error("per-chunk delay...");
  report.chunks = await streamDelays(flags);
  console.error(`${flags.streams} slow streams...`);
  report.manyStreams = await manyStreams(flags);

  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  const file = new URL(
    `./results/compare-${report.started}.json`.replaceAll(":", "-"),
    import.meta.url,
  );
  await Deno.writeTextFile(file, JSON.stringify(report, null, 1));
  printReport(report);
  console.log(`\nraw results: ${file.pathname}`);
}

if (import.meta.main) {
  const flags = readFlags(Deno.args);
  await withDeadline(8 * 60_000, () => main(flags));
  Deno.exit(0);
}
