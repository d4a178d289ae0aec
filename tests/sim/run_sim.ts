/**
 * Runs the Ollama simulator standalone, for benchmarks and manual use:
 *
 * ```sh
 * deno run --allow-net tests/sim/run_sim.ts --port 11434 [--chunks 5] \
 *   [--chunk-delay-ms 20] [--header-delay-ms 0] [--hostname 127.0.0.1] \
 *   [--log-requests]
 * ```
 *
 * With `--log-requests`, each request that reached it is printed as one JSON
 * line: method, path, Butler's identity headers, and what Ollama would act on
 * (models, caps, keep_alive, stream) or the error it would answer. Prompt
 * texts are not printed. A line is printed as the request arrives, so it
 * cannot say whether the client later went away.
 *
 * @module
 */

import { type SimRecord, startOllamaSim } from "./ollama_sim.ts";

function readFlags(args: readonly string[]): Record<string, string> {
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--log-requests") {
      flags["log-requests"] = "yes";
      continue;
    }
    if (!arg.startsWith("--")) {
      throw new RangeError(`argument ${i + 1}: "${arg}" is not a --flag`);
    }
    const eq = arg.indexOf("=");
    if (eq >= 0) {
      flags[arg.slice(2, eq)] = arg.slice(eq + 1);
    } else {
      const value = args[++i];
      if (value === undefined) {
        throw new RangeError(`${arg}: needs a value`);
      }
      flags[arg.slice(2)] = value;
    }
  }
  return flags;
}

/** One request as a log line, without its prompt texts. */
function describeRecord(record: SimRecord): string {
  const { texts: _texts, context: _context, ...acted } = record.acted ?? {};
  return JSON.stringify({
    method: record.method,
    path: record.path + record.query,
    client: record.headers["x-butler-client"],
    user: record.headers["x-butler-user"],
    acted: record.acted === undefined ? undefined : acted,
    error: record.error,
  });
}

function numberFlag(
  flags: Record<string, string>,
  name: string,
): number | undefined {
  if (!(name in flags)) return undefined;
  const n = Number(flags[name]);
  if (!Number.isInteger(n) || n < 0) {
    throw new RangeError(
      `--${name}: "${flags[name]}" is not a whole number >= 0`,
    );
  }
  return n;
}

if (import.meta.main) {
  const flags = readFlags(Deno.args);
  const sim = await startOllamaSim({
    port: numberFlag(flags, "port") ?? 11434,
    hostname: flags.hostname ?? "127.0.0.1",
    chunks: numberFlag(flags, "chunks"),
    chunkDelayMs: numberFlag(flags, "chunk-delay-ms"),
    headerDelayMs: numberFlag(flags, "header-delay-ms"),
  });
  console.log(`ollama simulator listening on ${sim.url}`);

  // Records would grow without bound in a long benchmark.
  const logRequests = flags["log-requests"] === "yes";
  setInterval(() => {
    if (logRequests) {
      for (const record of sim.records) console.log(describeRecord(record));
    }
    sim.clear();
  }, 200);
  Deno.addSignalListener("SIGINT", async () => {
    await sim.close();
    Deno.exit(0);
  });
}
