/**
 * Runs inside Butler's permission sandbox: starts Butler with `--config`,
 * then tries things a compromised dependency might try, and prints one JSON
 * line per attempt to stdout:
 *
 * ```json
 * {"attempt":"fetch another port","outcome":"refused","error":"NotCapable","message":"…"}
 * ```
 *
 * `outcome` is `allowed` when the attempt worked, `refused` when it threw
 * `Deno.errors.NotCapable`, `failed` for any other error. Run it with exactly
 * the flags `main.ts permissions` prints:
 *
 * ```sh
 * deno run <flags> tests/support/sandbox_probe.ts --config butler.yaml \
 *   --forbidden-port 40001 --forbidden-file /tmp/x/secret.txt
 * ```
 *
 * @module
 */

import { startButler } from "../../src/serve.ts";
import { Logger } from "../../src/observe/log.ts";
import { loadPolicy } from "../../src/config/load.ts";

/** The outcome of one attempt, as printed. */
export interface ProbeLine {
  readonly attempt: string;
  readonly outcome: "allowed" | "refused" | "failed";
  readonly error?: string;
  readonly message?: string;
}

function flag(name: string): string {
  const index = Deno.args.indexOf(`--${name}`);
  const value = index < 0 ? undefined : Deno.args[index + 1];
  if (value === undefined) throw new RangeError(`--${name}: needs a value`);
  return value;
}

async function attempt(name: string, fn: () => unknown): Promise<void> {
  let line: ProbeLine;
  try {
    await fn();
    line = { attempt: name, outcome: "allowed" };
  } catch (error) {
    const err = error instanceof Error ? error : new Error(String(error));
    line = {
      attempt: name,
      outcome: error instanceof Deno.errors.NotCapable ? "refused" : "failed",
      error: err.name,
      message: err.message,
    };
  }
  console.log(JSON.stringify(line));
}

if (import.meta.main) {
  const configPath = flag("config");
  const forbiddenPort = Number(flag("forbidden-port"));
  const forbiddenFile = flag("forbidden-file");

  // Butler's own log would mix with the probe's lines: drop it.
  const butler = await startButler({
    configPath,
    log: new Logger({ sink: () => {} }),
  });
  const policy = await loadPolicy(configPath);
  const self = `http://127.0.0.1:${butler.addr.port}`;

  // What Butler needs must keep working inside the sandbox.
  await attempt("fetch the upstream", async () => {
    const response = await fetch(new URL("/api/version", policy.upstream));
    await response.body?.cancel();
  });
  await attempt("fetch own /healthz", async () => {
    const response = await fetch(`${self}/healthz`);
    if (response.status !== 200) throw new Error(`status ${response.status}`);
    await response.body?.cancel();
  });
  await attempt("read the config", () => Deno.readTextFile(configPath));

  // Everything else must be refused.
  await attempt("fetch another port", async () => {
    const response = await fetch(`http://127.0.0.1:${forbiddenPort}/`);
    await response.body?.cancel();
  });
  await attempt("connect to another port", async () => {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: forbiddenPort,
    });
    conn.close();
  });
  await attempt("fetch the upstream by another name", async () => {
    const response = await fetch(
      `http://localhost:${policy.upstream.port}/api/version`,
    );
    await response.body?.cancel();
  });
  await attempt("listen on another port", () => {
    Deno.listen({ hostname: "127.0.0.1", port: 0 }).close();
  });
  await attempt("read another file", () => Deno.readTextFile(forbiddenFile));
  await attempt("list the config's directory", async () => {
    for await (const _ of Deno.readDir(forbiddenFile.replace(/\/[^/]*$/, ""))) {
      break;
    }
  });
  await attempt("read /etc/passwd", () => Deno.readTextFile("/etc/passwd"));
  await attempt("read env HOME", () => Deno.env.get("HOME"));
  await attempt(
    "write a file",
    () => Deno.writeTextFile(`${forbiddenFile}.written`, "x"),
  );
  await attempt("run a program", () => new Deno.Command("true").output());
  await attempt("read system info", () => Deno.hostname());
  await attempt(
    "load a native library",
    () => Deno.dlopen("libc.so.6", {}).close(),
  );

  await butler.shutdown();
}
