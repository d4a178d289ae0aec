/**
 * Runs `wrk` (4.x) and reads its results as JSON: a Lua `done` hook prints
 * requests, errors and latency percentiles. A request body, headers and a
 * per-connection pacing delay are set through the same script.
 *
 * @module
 */

/** What one wrk run measured. Latencies in milliseconds. */
export interface WrkResult {
  readonly requests: number;
  readonly seconds: number;
  readonly rps: number;
  readonly errors: number;
  /** Responses that were not 2xx/3xx. */
  readonly non2xx: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly connections: number;
}

/** Options for {@linkcode runWrk}. */
export interface WrkOptions {
  readonly url: string;
  readonly connections: number;
  readonly seconds: number;
  readonly threads?: number;
  readonly method?: string;
  readonly body?: string;
  readonly headers?: Record<string, string>;
  /**
   * Milliseconds each connection waits before sending its next request
   * (wrk's Lua `delay()`): with `c` connections the offered load is about
   * `c * 1000 / (delayMs + latency)` requests per second.
   */
  readonly delayMs?: number;
}

function luaString(text: string): string {
  return JSON.stringify(text);
}

function script(options: WrkOptions): string {
  const lines = [
    `wrk.method = ${luaString(options.method ?? "GET")}`,
  ];
  if (options.body !== undefined) {
    lines.push(`wrk.body = ${luaString(options.body)}`);
  }
  for (const [name, value] of Object.entries(options.headers ?? {})) {
    lines.push(`wrk.headers[${luaString(name)}] = ${luaString(value)}`);
  }
  if (options.delayMs !== undefined && options.delayMs > 0) {
    lines.push(`function delay() return ${Math.round(options.delayMs)} end`);
  }
  lines.push(`
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\":%d,\\"micros\\":%d,\\"connect\\":%d,\\"read\\":%d,\\"write\\":%d,\\"timeout\\":%d,\\"status\\":%d,\\"p50\\":%d,\\"p90\\":%d,\\"p99\\":%d,\\"max\\":%d}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    e.status, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end`);
  return lines.join("\n");
}

/** Runs wrk once and returns what it measured. */
export async function runWrk(options: WrkOptions): Promise<WrkResult> {
  const path = await Deno.makeTempFile({ suffix: ".lua" });
  try {
    await Deno.writeTextFile(path, script(options));
    const output = await new Deno.Command("/usr/bin/wrk", {
      args: [
        `-t${options.threads ?? 1}`,
        `-c${options.connections}`,
        `-d${options.seconds}s`,
        "--timeout",
        "10s",
        "-s",
        path,
        options.url,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(output.stdout);
    const line = text.split("\n").find((l) => l.startsWith("WRKJSON "));
    if (line === undefined) {
      throw new Error(
        `wrk printed no result: ${text}${
          new TextDecoder().decode(output.stderr)
        }`,
      );
    }
    const raw = JSON.parse(line.slice("WRKJSON ".length));
    const seconds = raw.micros / 1e6;
    return {
      requests: raw.requests,
      seconds,
      rps: raw.requests / seconds,
      errors: raw.connect + raw.read + raw.write + raw.timeout,
      non2xx: raw.status,
      p50: raw.p50 / 1000,
      p90: raw.p90 / 1000,
      p99: raw.p99 / 1000,
      max: raw.max / 1000,
      connections: options.connections,
    };
  } finally {
    await Deno.remove(path).catch(() => {});
  }
}
