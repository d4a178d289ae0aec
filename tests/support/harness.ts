/**
 * Test harness: the Ollama simulator and a real Butler on real sockets,
 * with the log captured.
 *
 * @module
 */

import {
  type OllamaSim,
  type SimOptions,
  startOllamaSim,
} from "../sim/ollama_sim.ts";
import { type RunningButler, startButler } from "../../src/serve.ts";
import { Logger } from "../../src/observe/log.ts";

/** A simulator and a Butler in front of it. */
export interface Stack {
  readonly sim: OllamaSim;
  readonly butler: RunningButler;
  /** Butler's base URL, e.g. http://127.0.0.1:PORT */
  readonly url: string;
  /** Every log line Butler wrote, parsed. */
  readonly logs: Record<string, unknown>[];
  readonly configPath: string;
  close(): Promise<void>;
}

/** Writes `text` to a temporary config file and returns its path. */
export async function writeConfig(text: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "butler-test-" });
  const path = `${dir}/butler.yaml`;
  await Deno.writeTextFile(path, text);
  return path;
}

/**
 * Starts the simulator and Butler. `config` is YAML in which `{{UPSTREAM}}`
 * is replaced by the simulator's URL; `listen` may be left out.
 */
export async function startStack(
  config: string,
  options: { sim?: SimOptions } = {},
): Promise<Stack> {
  const sim = await startOllamaSim({ chunkDelayMs: 5, ...options.sim });
  const configPath = await writeConfig(
    config.replaceAll("{{UPSTREAM}}", sim.url),
  );
  const logs: Record<string, unknown>[] = [];
  const log = new Logger({ sink: (line) => logs.push(JSON.parse(line)) });
  let butler: RunningButler;
  try {
    butler = await startButler({ configPath, port: 0, log });
  } catch (error) {
    await sim.close();
    throw error;
  }
  const url = `http://127.0.0.1:${butler.addr.port}`;
  return {
    sim,
    butler,
    url,
    logs,
    configPath,
    async close() {
      await butler.shutdown();
      await sim.close();
    },
  };
}

/**
 * Starts a stack for `config` (see `startStack`), runs `fn` on it and
 * closes the stack afterwards, whether `fn` threw or not.
 */
export async function withStackFor(
  config: string,
  fn: (stack: Stack) => Promise<void>,
  options: { sim?: SimOptions } = {},
): Promise<void> {
  const stack = await startStack(config, options);
  try {
    await fn(stack);
  } finally {
    await stack.close();
  }
}

/**
 * POSTs `body` to `stack.url + path` as JSON (a string is sent as it is),
 * with `content-type: application/json` and the given `headers`.
 */
export function postJson(
  stack: Stack,
  path: string,
  options: { body: unknown; headers?: Record<string, string> },
): Promise<Response> {
  const { body } = options;
  return fetch(stack.url + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...options.headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/** Test keys: long enough for the config's 16-character rule. */
export const KEYS = {
  app: "test-key-app-0123456789",
  admin: "test-key-admin-0123456789",
  limited: "test-key-limited-0123456789",
} as const;

/** Authorization header for a key. */
export function bearer(key: string): Record<string, string> {
  return { authorization: `Bearer ${key}` };
}
