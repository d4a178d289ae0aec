/**
 * Faults, over real sockets: the upstream dying mid-stream, slow to answer
 * or refusing connections, and clients that trickle, idle or send oversized
 * headers. Butler runs in-process (its log and metrics are read); the Ollama
 * simulator runs as a child process, so it can be killed outright.
 */

import assert from "node:assert/strict";
import { type RunningButler, startButler } from "../src/serve.ts";
import { Logger } from "../src/observe/log.ts";
import { bearer, KEYS, writeConfig } from "./support/harness.ts";
import { startOllamaSim } from "./sim/ollama_sim.ts";
import {
  freePort,
  type Service,
  type SimulatorOptions,
  startSimulator,
} from "../bench/lib/procs.ts";

interface FaultStack {
  readonly url: string;
  readonly butler: RunningButler;
  readonly logs: Record<string, unknown>[];
  sim: Service;
  /** Starts a new simulator on the same port. */
  restartSim(): Promise<void>;
  close(): Promise<void>;
}

async function startFaultStack(
  options: {
    sim?: SimulatorOptions;
    upstreamTimeout?: string;
    bodyReadTimeoutMs?: number;
    /**
     * Point Butler at this port instead of starting a simulator child
     * process (a port nothing listens on, or an in-process simulator).
     */
    upstreamPort?: number;
  } = {},
): Promise<FaultStack> {
  const simPort = options.upstreamPort ?? freePort();
  let sim: Service | undefined = options.upstreamPort === undefined
    ? await startSimulator({ port: simPort, ...options.sim })
    : undefined;
  const configPath = await writeConfig(`
listen: 127.0.0.1:0
upstream: http://127.0.0.1:${simPort}
upstream_timeout: ${options.upstreamTimeout ?? "10s"}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["*"]
`);
  const logs: Record<string, unknown>[] = [];
  const butler = await startButler({
    configPath,
    port: 0,
    log: new Logger({ sink: (line) => logs.push(JSON.parse(line)) }),
    bodyReadTimeoutMs: options.bodyReadTimeoutMs,
  });
  const stack: FaultStack = {
    url: `http://127.0.0.1:${butler.addr.port}`,
    butler,
    logs,
    get sim() {
      return sim!;
    },
    set sim(value) {
      sim = value;
    },
    async restartSim() {
      await sim?.stop();
      sim = await startSimulator({ port: simPort, ...options.sim });
    },
    async close() {
      await butler.shutdown();
      await sim?.stop();
    },
  };
  return stack;
}

function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { ...bearer(KEYS.app), "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** Reads `body` until `count` newline-terminated lines have arrived. */
async function readLines(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  count: number,
): Promise<{ text: string; done: boolean }> {
  const decoder = new TextDecoder();
  let text = "";
  while (text.split("\n").length - 1 < count) {
    const { done, value } = await reader.read();
    if (done) return { text, done: true };
    text += decoder.decode(value, { stream: true });
  }
  return { text, done: false };
}

async function readRest(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<string> {
  const decoder = new TextDecoder();
  let text = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return text;
    text += decoder.decode(value, { stream: true });
  }
}

async function metric(url: string, name: string): Promise<string> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return text.split("\n").filter((line) => line.startsWith(name)).join("\n");
}

async function killMidStream(
  stack: FaultStack,
  request: { path: string; body: unknown; linesBefore: number },
): Promise<{ before: string; after: string; elapsedMs: number }> {
  const response = await post(stack.url + request.path, request.body);
  assert.equal(response.status, 200);
  const reader = response.body!.getReader();
  const { text: before, done } = await readLines(reader, request.linesBefore);
  assert.equal(done, false, "the stream ended before the upstream was killed");

  const killed = performance.now();
  Deno.kill(stack.sim.pid, "SIGKILL");
  const after = await readRest(reader);
  return { before, after, elapsedMs: performance.now() - killed };
}

const SLOW_STREAM = { chunks: 200, chunkDelayMs: 30 };

Deno.test("upstream killed mid-stream: native stream ends with an error line, logged, counted; Butler keeps serving", async () => {
  const stack = await startFaultStack({ sim: SLOW_STREAM });
  try {
    const { before, after, elapsedMs } = await killMidStream(stack, {
      path: "/api/chat",
      body: { model: "llama3.2", messages: [{ role: "user", content: "hi" }] },
      linesBefore: 2,
    });
    assert.ok(elapsedMs < 3000, `stream ended ${elapsedMs} ms after the kill`);
    const lines = (before + after).trim().split("\n").map((l) => JSON.parse(l));
    const last = lines.at(-1);
    assert.equal(typeof last.error, "string", JSON.stringify(last));
    assert.ok(lines.slice(0, -1).every((line) => line.done === false));

    const response = stack.logs.find((l) => l.msg === "response");
    assert.equal(response?.end, "upstream_error");
    assert.match(
      await metric(stack.url, "butler_upstream_broken_total"),
      /route="\/api\/chat"\} 1/,
    );

    // Butler keeps serving: the upstream is back, so is the answer.
    await stack.restartSim();
    const again = await post(stack.url + "/api/generate", {
      model: "llama3.2",
      prompt: "hi",
      stream: false,
      options: { num_predict: 2 },
    });
    assert.equal(again.status, 200);
    assert.equal((await again.json()).done, true);
  } finally {
    await stack.close();
  }
});

Deno.test("upstream killed mid-stream: OpenAI, Anthropic and Responses SSE streams end with an error event", async () => {
  const stack = await startFaultStack({ sim: SLOW_STREAM });
  try {
    const openai = await killMidStream(stack, {
      path: "/v1/chat/completions",
      body: {
        model: "llama3.2",
        stream: true,
        messages: [{ role: "user", content: "hi" }],
      },
      linesBefore: 4,
    });
    const openaiEvents = (openai.before + openai.after).trim().split("\n\n");
    const lastOpenai = openaiEvents.at(-1)!;
    assert.match(lastOpenai, /^data: /);
    const error = JSON.parse(lastOpenai.slice("data: ".length)).error;
    assert.equal(typeof error.message, "string");
    assert.equal(error.type, "api_error");
    assert.ok(openai.elapsedMs < 3000);

    await stack.restartSim();
    const anthropic = await killMidStream(stack, {
      path: "/v1/messages",
      body: {
        model: "llama3.2",
        max_tokens: 500,
        stream: true,
        messages: [{ role: "user", content: "hi" }],
      },
      linesBefore: 12,
    });
    const events = (anthropic.before + anthropic.after).trim().split("\n\n");
    const [name, data] = events.at(-1)!.split("\n");
    assert.equal(name, "event: error");
    const payload = JSON.parse(data.slice("data: ".length));
    assert.equal(payload.type, "error");
    assert.equal(payload.error.type, "api_error");
    assert.ok(anthropic.elapsedMs < 3000);

    await stack.restartSim();
    const responses = await killMidStream(stack, {
      path: "/v1/responses",
      body: { model: "llama3.2", stream: true, input: "hi" },
      linesBefore: 12,
    });
    const last = (responses.before + responses.after).trim().split("\n\n")
      .at(-1)!.split("\n");
    assert.equal(last[0], "event: error");
    assert.equal(JSON.parse(last[1].slice("data: ".length)).type, "error");
  } finally {
    await stack.close();
  }
});

Deno.test("upstream slow to send headers: waited for up to upstream_timeout, then 504 in dialect", async () => {
  const stack = await startFaultStack({
    sim: { headerDelayMs: 4000, chunks: 2, chunkDelayMs: 0 },
    upstreamTimeout: "500ms",
  });
  try {
    const started = performance.now();
    const native = await post(stack.url + "/api/chat", {
      model: "llama3.2",
      stream: false,
      messages: [{ role: "user", content: "hi" }],
    });
    const elapsed = performance.now() - started;
    assert.equal(native.status, 504);
    assert.equal(typeof (await native.json()).error, "string");
    // Well before the headers would have come: the timeout answered, with
    // room for a loaded CI machine.
    assert.ok(elapsed >= 450 && elapsed < 3000, `answered after ${elapsed} ms`);

    const openai = await post(stack.url + "/v1/chat/completions", {
      model: "llama3.2",
      messages: [{ role: "user", content: "hi" }],
    });
    assert.equal(openai.status, 504);
    assert.equal(typeof (await openai.json()).error.message, "string");
  } finally {
    await stack.close();
  }

  // Within the timeout, the slow answer is simply waited for.
  const patient = await startFaultStack({
    sim: { headerDelayMs: 1000, chunks: 2, chunkDelayMs: 0 },
    upstreamTimeout: "5s",
  });
  try {
    const response = await post(patient.url + "/api/chat", {
      model: "llama3.2",
      stream: false,
      messages: [{ role: "user", content: "hi" }],
    });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).done, true);
  } finally {
    await patient.close();
  }
});

Deno.test("upstream refusing connections: 502 at once", async () => {
  const stack = await startFaultStack({ upstreamPort: freePort() });
  try {
    for (const path of ["/api/chat", "/v1/chat/completions"]) {
      const started = performance.now();
      const response = await post(stack.url + path, {
        model: "llama3.2",
        messages: [{ role: "user", content: "hi" }],
      });
      const elapsed = performance.now() - started;
      assert.equal(response.status, 502);
      const body = await response.json();
      assert.ok(
        typeof body.error === "string" ||
          typeof body.error.message === "string",
      );
      // At once: no waiting out upstream_timeout (10 s here).
      assert.ok(elapsed < 2500, `502 after ${elapsed} ms`);
    }
    const refusal = stack.logs.find((l) =>
      l.reason === "upstream_unavailable" && l.status === 502
    );
    assert.ok(refusal, JSON.stringify(stack.logs));
    // The log says why, without the URL (a query may carry a prompt).
    assert.match(String(refusal.error), /refused|connect/i);
    assert.doesNotMatch(String(refusal.error), /https?:\/\//);
  } finally {
    await stack.close();
  }
});

// --- Hostile clients -------------------------------------------------------

const encoder = new TextEncoder();

async function rawConnection(url: string): Promise<Deno.TcpConn> {
  const { port } = new URL(url);
  return await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
}

/** The status line of the first answer on `conn`, or "closed". */
async function statusLine(conn: Deno.Conn): Promise<string> {
  const buffer = new Uint8Array(4096);
  let text = "";
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) return text === "" ? "closed" : text.split("\r\n")[0];
    text += new TextDecoder().decode(buffer.subarray(0, n));
    if (text.includes("\r\n")) return text.split("\r\n")[0];
  }
}

async function servedPromptly(url: string): Promise<void> {
  const started = performance.now();
  const response = await fetch(`${url}/api/version`, {
    headers: bearer(KEYS.app),
  });
  assert.equal(response.status, 200);
  await response.body?.cancel();
  const elapsed = performance.now() - started;
  assert.ok(elapsed < 2000, `an ordinary request took ${elapsed} ms`);
}

Deno.test("clients trickling headers or holding idle connections do not stop others being served", async () => {
  const stack = await startFaultStack();
  const conns: Deno.TcpConn[] = [];
  try {
    // 2,000 idle connections, 100 with half a request line, 100 with
    // headers that never end.
    for (let i = 0; i < 2000; i++) conns.push(await rawConnection(stack.url));
    for (const conn of conns.slice(0, 100)) {
      await conn.write(encoder.encode("POST /api/ch"));
    }
    for (const conn of conns.slice(100, 200)) {
      await conn.write(
        encoder.encode("POST /api/chat HTTP/1.1\r\nHost: x\r\nX-Slow: a"),
      );
    }
    await servedPromptly(stack.url);

    // One byte at a time for a while: others are still served meanwhile.
    const trickler = conns[0];
    for (let i = 0; i < 5; i++) {
      await trickler.write(encoder.encode("a"));
      await servedPromptly(stack.url);
    }
  } finally {
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // already closed by the server
      }
    }
    await stack.close();
  }
});

Deno.test("a client trickling its body gets 408 at the body read deadline; nothing reaches Ollama", async () => {
  const sim = await startOllamaSim({ chunkDelayMs: 0 });
  const stack = await startFaultStack({
    bodyReadTimeoutMs: 500,
    upstreamPort: sim.port,
  });
  const conn = await rawConnection(stack.url);
  try {
    const body = JSON.stringify({ model: "llama3.2", prompt: "hi" });
    await conn.write(encoder.encode(
      `POST /api/generate HTTP/1.1\r\nHost: x\r\n` +
        `Authorization: Bearer ${KEYS.app}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n` +
        body.slice(0, 5),
    ));
    const started = performance.now();
    const answer = statusLine(conn);
    // Keep trickling, slower than the deadline allows.
    for (let i = 5; i < 10; i++) {
      await new Promise((resolve) => setTimeout(resolve, 150));
      try {
        await conn.write(encoder.encode(body[i]));
      } catch {
        break;
      }
    }
    assert.match(await answer, /^HTTP\/1\.1 408/);
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 400 && elapsed < 3000, `408 after ${elapsed} ms`);
    assert.ok(stack.logs.some((l) => l.msg === "refused" && l.status === 408));
    assert.equal(sim.records.length, 0, "the trickled request reached Ollama");
    await servedPromptly(stack.url);
    assert.equal(sim.records.length, 1);
  } finally {
    conn.close();
    await stack.close();
    await sim.close();
  }
});

Deno.test("oversized headers are refused by the HTTP server; others are still served", async () => {
  const stack = await startFaultStack();
  try {
    const conn = await rawConnection(stack.url);
    try {
      await conn.write(encoder.encode(
        `GET /api/version HTTP/1.1\r\nHost: x\r\n` +
          `X-Big: ${"a".repeat(128 * 1024)}\r\n\r\n`,
      ));
      // Deno's HTTP server answers 400 past ~64 KiB of headers (not 431).
      assert.match(await statusLine(conn), /^(HTTP\/1\.1 4\d\d|closed)/);
    } finally {
      conn.close();
    }
    // Many header fields.
    const many = await rawConnection(stack.url);
    try {
      const fields = Array.from({ length: 500 }, (_, i) => `X-F${i}: v`);
      await many.write(encoder.encode(
        `GET /api/version HTTP/1.1\r\nHost: x\r\n${
          fields.join("\r\n")
        }\r\n\r\n`,
      ));
      assert.match(await statusLine(many), /^(HTTP\/1\.1 4\d\d|closed)/);
    } finally {
      many.close();
    }
    await servedPromptly(stack.url);
  } finally {
    await stack.close();
  }
});
