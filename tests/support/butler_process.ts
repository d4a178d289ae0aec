/**
 * Helpers for tests that run Butler (`main.ts`) or another `deno` command
 * as a child process: a free port, the repo root, running and spawning
 * `deno`, collecting a stream's text and polling until Butler is healthy.
 *
 * @module
 */

/** The repository root (with a trailing slash), the children's cwd. */
export const ROOT = new URL("../../", import.meta.url).pathname;

/** `main.ts` by its absolute path. */
export const MAIN = `${ROOT}main.ts`;

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** What a finished command returned. */
export interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `deno <args>` in the repo root and returns its exit code and output. */
export async function runDeno(
  args: string[],
  env: Record<string, string> = {},
): Promise<Ran> {
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env,
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/**
 * Starts `deno <args>` in the repo root with no stdin and with stdout and
 * stderr piped; the caller reads both and stops the child by its handle.
 */
export function spawnDeno(
  args: string[],
  env: Record<string, string> = {},
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Collects a byte stream as text; `done` resolves when the stream ends. */
export function collect(
  stream: ReadableStream<Uint8Array>,
): { text: () => string; done: Promise<void> } {
  let text = "";
  const done = (async () => {
    for await (
      const chunk of stream.pipeThrough(new TextDecoderStream())
    ) text += chunk;
  })();
  return { text: () => text, done };
}

/** Polls `check` until it is true (at most 200 times, 50 ms apart). */
export async function eventually(
  check: () => Promise<boolean>,
): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("condition not reached within 10 s");
}

/** Waits until `${url}/healthz` answers 200 (see `eventually`). */
export async function waitHealthy(url: string): Promise<void> {
  await eventually(async () => {
    const response = await fetch(url + "/healthz").catch(() => undefined);
    await response?.body?.cancel();
    return response?.status === 200;
  });
}

/**
 * The flags of a printed `deno run|compile … main.ts …` line: the words
 * between the subcommand and the program.
 */
export function flagsBeforeMain(commandLine: string): string[] {
  const words = commandLine.trim().split(/\s+/);
  return words.slice(2, words.indexOf("main.ts"));
}
