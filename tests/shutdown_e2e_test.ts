/**
 * Graceful shutdown of the real process: on SIGTERM or SIGINT Butler stops
 * accepting connections, lets streams that end within `shutdown_grace`
 * finish, cuts the others when it expires, writes the token usage to the
 * state file and exits 0.
 */

import assert from "node:assert/strict";
import { bearer, KEYS } from "./support/harness.ts";
import { startOllamaSim } from "./sim/ollama_sim.ts";
import { loadPolicy } from "../src/config/load.ts";
import {
  permissionFlags,
  requiredPermissions,
  RUNTIME_FLAGS,
} from "../src/permissions.ts";
import {
  collect,
  eventually,
  freePort,
  MAIN,
  spawnDeno,
  waitHealthy,
} from "./support/butler_process.ts";

/** Starts `main.ts` on a free port with a state file and a 1 s grace. */
async function startProcess(simUrl: string) {
  const dir = await Deno.makeTempDir({ prefix: "butler-shutdown-" });
  const port = freePort();
  const configPath = `${dir}/butler.yaml`;
  const stateFile = `${dir}/state/usage.json`;
  await Deno.mkdir(`${dir}/state`);
  await Deno.writeTextFile(
    configPath,
    `
listen: 127.0.0.1:${port}
upstream: ${simUrl}
shutdown_grace: 1s
state_file: ${stateFile}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2"]
    max_tokens_per_day: 1000
`,
  );
  // Exactly the permissions `main.ts permissions` prints: write access to
  // the state file's directory and nowhere else.
  const flags = permissionFlags(
    requiredPermissions(await loadPolicy(configPath)),
  );
  assert.ok(flags.includes(`--allow-write=${dir}/state`), flags.join(" "));
  const child = spawnDeno([
    "run",
    "--no-lock",
    ...flags,
    ...RUNTIME_FLAGS,
    MAIN,
    "--config",
    configPath,
  ]);
  const output = collect(child.stdout);
  const errors = collect(child.stderr);
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(url);
  return { child, output, errors, url, dir, stateFile };
}

/** Kills a child a failed test left running (by its own handle). */
async function stopIfRunning(child: Deno.ChildProcess) {
  try {
    child.kill("SIGKILL");
  } catch {
    // Already exited, as it should have.
  }
  await child.status;
}

/** Reads a native stream until it ends or breaks; counts its token lines. */
async function readStream(response: Response) {
  let text = "";
  let broken = false;
  try {
    for await (
      const chunk of response.body!.pipeThrough(new TextDecoderStream())
    ) text += chunk;
  } catch {
    broken = true;
  }
  const lines = text.split("\n").filter((line) => line.trim() !== "");
  const last = lines.length > 0 ? JSON.parse(lines.at(-1)!) : undefined;
  return {
    tokens: lines.filter((line) => line.includes('"done":false')).length,
    complete: last?.done === true,
    error: typeof last?.error === "string" ? last.error as string : undefined,
    broken,
  };
}

function generate(url: string, numPredict?: number) {
  return fetch(url + "/api/generate", {
    method: "POST",
    headers: bearer(KEYS.app),
    body: JSON.stringify({
      model: "llama3.2",
      prompt: "x",
      ...(numPredict === undefined
        ? {}
        : { options: { num_predict: numPredict } }),
    }),
  });
}

Deno.test("SIGTERM: streams within grace finish, longer ones are cut, usage saved", async () => {
  // 40 tokens at 100 ms: 4 s, longer than the 1 s grace.
  const sim = await startOllamaSim({ chunks: 40, chunkDelayMs: 100 });
  const butler = await startProcess(sim.url);
  try {
    const short = await generate(butler.url, 5); // about 0.5 s
    const long = await generate(butler.url);
    assert.equal(short.status, 200);
    assert.equal(long.status, 200);
    const shortRead = readStream(short);
    const longRead = readStream(long);
    await new Promise((resolve) => setTimeout(resolve, 150));

    butler.child.kill("SIGTERM");

    // No new connection is accepted once shutdown has begun.
    await eventually(async () => {
      const refused = await fetch(butler.url + "/healthz")
        .then(async (r) => (await r.body?.cancel(), false))
        .catch(() => true);
      return refused;
    });

    const finished = await shortRead;
    assert.equal(finished.complete, true, "the short stream finished");
    assert.equal(finished.tokens, 5);
    const cut = await longRead;
    assert.equal(cut.complete, false, "the long stream was cut at grace");
    // The client is told why, in its dialect, not blamed on Ollama.
    assert.match(cut.error ?? "", /shutting down/);
    assert.ok(cut.tokens >= 1 && cut.tokens < 40, `${cut.tokens} tokens`);

    const status = await butler.child.status;
    await Promise.all([butler.output.done, butler.errors.done]);
    assert.equal(status.code, 0, butler.errors.text());
    assert.match(butler.output.text(), /grace period over/);
    // The cut stream is logged as Butler's shutdown, not as Ollama's fault.
    const ends = butler.output.text().split("\n").filter((line) =>
      line.includes('"msg":"response"')
    ).map((line) => JSON.parse(line).end).sort();
    assert.deepEqual(ends, ["complete", "shutdown"]);

    // Both answers were charged: the cut one for what streamed.
    const state = JSON.parse(await Deno.readTextFile(butler.stateFile));
    const charged = state.usage["client:app"].generated;
    assert.ok(
      charged >= 5 + cut.tokens && charged <= 5 + cut.tokens + 2,
      `charged ${charged} for 5 + ${cut.tokens} streamed`,
    );
    // Only the state file is in its directory: no temporary left behind.
    const names = [];
    for await (const entry of Deno.readDir(`${butler.dir}/state`)) {
      names.push(entry.name);
    }
    assert.deepEqual(names, ["usage.json"]);
  } finally {
    await stopIfRunning(butler.child);
    await sim.close();
    await Deno.remove(butler.dir, { recursive: true });
  }
});

Deno.test("SIGINT: idle Butler exits 0 at once and writes its usage", async () => {
  const sim = await startOllamaSim({ chunks: 3, chunkDelayMs: 1 });
  const butler = await startProcess(sim.url);
  try {
    await (await generate(butler.url)).text();
    const started = performance.now();
    butler.child.kill("SIGINT");
    const status = await butler.child.status;
    await Promise.all([butler.output.done, butler.errors.done]);
    assert.equal(status.code, 0, butler.errors.text());
    // Nothing was in flight: no reason to wait out the grace period.
    assert.doesNotMatch(butler.output.text(), /grace period over/);
    // The last log lines are flushed before the process exits.
    assert.match(butler.output.text(), /"msg":"stopped"/);
    assert.ok(performance.now() - started < 5000);
    const state = JSON.parse(await Deno.readTextFile(butler.stateFile));
    assert.equal(state.usage["client:app"].generated, 3);
  } finally {
    await stopIfRunning(butler.child);
    await sim.close();
    await Deno.remove(butler.dir, { recursive: true });
  }
});

Deno.test("SIGTERM: a client trickling a body does not hold Butler past the grace", async () => {
  const sim = await startOllamaSim({ chunks: 3, chunkDelayMs: 1 });
  const butler = await startProcess(sim.url);
  const conn = await Deno.connect({
    hostname: "127.0.0.1",
    port: Number(new URL(butler.url).port),
  });
  try {
    // One answered request, so there is usage to save.
    await (await generate(butler.url)).text();
    // A request whose body never finishes arriving.
    await conn.write(new TextEncoder().encode(
      `POST /api/chat HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEYS.app}\r\n` +
        `Content-Length: 1000\r\n\r\n{"model":`,
    ));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const started = performance.now();
    butler.child.kill("SIGTERM");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const status = await Promise.race([
      butler.child.status,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), 10_000);
      }),
    ]);
    clearTimeout(timer);
    const elapsed = performance.now() - started;
    assert.ok(status !== undefined, "still running 10 s after SIGTERM");
    await Promise.all([butler.output.done, butler.errors.done]);
    assert.equal(status.code, 0, butler.errors.text());
    // 1 s of grace and a short wait after it, not as long as the client likes.
    assert.ok(elapsed < 8000, `exited ${Math.round(elapsed)} ms after SIGTERM`);
    assert.match(butler.output.text(), /"msg":"stopped"/);
    const state = JSON.parse(await Deno.readTextFile(butler.stateFile));
    assert.equal(state.usage["client:app"].generated, 3);
  } finally {
    try {
      conn.close();
    } catch {
      // already closed by Butler's exit
    }
    await stopIfRunning(butler.child);
    await sim.close();
    await Deno.remove(butler.dir, { recursive: true });
  }
});
