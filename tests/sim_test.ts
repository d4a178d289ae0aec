import assert from "node:assert/strict";
import { zstdCompressSync } from "node:zlib";
import {
  bindJson,
  CHAT_COMPLETION_REQUEST,
  CHAT_REQUEST,
  decodeFirstValue,
  GENERATE_REQUEST,
  goFoldName,
  intOption,
  setFoldReading,
} from "./sim/go_decode.ts";
import { parseModelRef, resolveModelRef } from "./sim/model_ref.ts";
import { freePort } from "./support/butler_process.ts";
import {
  type OllamaSim,
  type SimOptions,
  startOllamaSim,
} from "./sim/ollama_sim.ts";

async function withSim(
  options: SimOptions,
  run: (sim: OllamaSim) => Promise<void>,
): Promise<void> {
  const sim = await startOllamaSim({ chunkDelayMs: 1, ...options });
  try {
    await run(sim);
  } finally {
    await sim.close();
  }
}

function post(
  sim: OllamaSim,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(sim.url + path, {
    method: "POST",
    headers,
    body: typeof body === "string" || body instanceof Uint8Array
      ? body as BodyInit
      : JSON.stringify(body),
  });
}

function ndjson(text: string): Record<string, unknown>[] {
  return text.trim().split("\n").map((line) => JSON.parse(line));
}

function sseData(text: string): string[] {
  return text.split("\n\n").filter((b) => b.trim() !== "").map((block) =>
    block.split("\n").find((l) => l.startsWith("data: "))!.slice(6)
  );
}

function sseEvents(text: string): string[] {
  return text.split("\n\n").filter((b) => b.trim() !== "").map((block) =>
    block.split("\n").find((l) => l.startsWith("event: "))!.slice(7)
  );
}

async function rawGet(sim: OllamaSim, host: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: sim.port });
  await conn.write(
    new TextEncoder().encode(
      `GET /api/version HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
    ),
  );
  const text = await new Response(conn.readable).text();
  return text;
}

// --- the reference decoder ---------------------------------------------------

Deno.test("go fold: long s, Kelvin sign, dotless and dotted I fold to ASCII", () => {
  assert.equal(goFoldName("meſſages"), "MESSAGES");
  assert.equal(goFoldName("\u212Aeep_alive"), "KEEP_ALIVE");
  assert.equal(goFoldName("ınput"), "INPUT");
  assert.equal(goFoldName("İnput"), "INPUT");
  const previous = setFoldReading("go");
  try {
    assert.equal(goFoldName("ınput"), "\u0131NPUT");
    assert.equal(goFoldName("İnput"), "\u0130NPUT");
    assert.equal(goFoldName("meſſages"), "MESSAGES");
  } finally {
    setFoldReading(previous);
  }
  assert.equal(goFoldName("ß"), "ß");
});

Deno.test("decoder: case variants land on one field and the last wins", () => {
  const r = bindJson('{"model":"a","Model":"b","MODEL":"c"}', CHAT_REQUEST);
  assert.equal(r.value!.model, "c");
  const s = bindJson('{"Model":"b","model":"a"}', CHAT_REQUEST);
  assert.equal(s.value!.model, "a");
});

Deno.test("decoder: unknown keys ignored, wrong type on a known field fails", () => {
  const ok = bindJson(
    '{"model":"m","nope":[1,{}],"prompt":"p"}',
    GENERATE_REQUEST,
  );
  assert.equal(ok.error, undefined);
  assert.equal(ok.value!.prompt, "p");
  const bad = bindJson('{"model":"m","prompt":5}', GENERATE_REQUEST);
  assert.match(bad.error!, /cannot unmarshal number 5 .*prompt.* string/);
  const badInt = bindJson('{"model":"m","top_logprobs":1.5}', GENERATE_REQUEST);
  assert.match(badInt.error!, /number 1\.5/);
});

Deno.test("decoder: only the first value is read; empty body is EOF", () => {
  const r = bindJson('{"model":"a"} {"model":"b"} garbage', GENERATE_REQUEST);
  assert.equal(r.error, undefined);
  assert.equal(r.value!.model, "a");
  assert.equal(bindJson("  \n", GENERATE_REQUEST).eof, true);
  assert.match(
    bindJson('{"model":"a"', GENERATE_REQUEST).error!,
    /unexpected EOF/,
  );
  assert.throws(() => decodeFirstValue('{"a":01}'));
  assert.throws(() => decodeFirstValue("\uFEFF{}"));
});

Deno.test("decoder: options keys are exact, maps merge, ints truncate", () => {
  const r = bindJson(
    '{"options":{"num_predict":7,"NUM_CTX":9},"Options":{"num_ctx":4096.9}}',
    GENERATE_REQUEST,
  );
  assert.deepEqual(intOption(r.value!.options, "num_predict"), { value: 7 });
  assert.deepEqual(intOption(r.value!.options, "num_ctx"), { value: 4096 });
  assert.deepEqual(intOption(r.value!.options, "num_keep"), {});
  const bad = bindJson('{"options":{"num_predict":"5"}}', GENERATE_REQUEST);
  assert.match(intOption(bad.value!.options, "num_predict").error!, /integer/);
});

Deno.test("decoder: a second messages array decodes into the first's elements", () => {
  // openai.Message has no custom unmarshaler: Go reuses the element and
  // keeps the content the second array did not mention.
  const r = bindJson(
    '{"messages":[{"role":"user","content":"secret"}],"Messages":[{"role":"user"}]}',
    CHAT_COMPLETION_REQUEST,
  );
  const messages = r.value!.messages as Record<string, unknown>[];
  assert.equal(messages[0].content, "secret");
  // api.Message replaces the whole element and lower-cases the role.
  const n = bindJson(
    '{"messages":[{"role":"user","content":"secret"}],"Messages":[{"role":"USER"}]}',
    CHAT_REQUEST,
  );
  const native = n.value!.messages as Record<string, unknown>[];
  assert.equal(native[0].content, "");
  assert.equal(native[0].role, "user");
});

Deno.test("model refs: trim, source suffixes, defaults, case-insensitive match", () => {
  const installed = ["llama3.2:1b", "gpt-oss:120b-cloud"];
  assert.deepEqual(parseModelRef(" llama3.2:1b:local "), {
    original: "llama3.2:1b:local",
    base: "llama3.2:1b",
    source: "local",
  });
  assert.equal(
    (parseModelRef("gpt-oss:120b-cloud") as { base: string }).base,
    "gpt-oss:120b",
  );
  assert.ok("error" in parseModelRef("x:cloud:local"));
  const r = resolveModelRef("LLAMA3.2:1B", { installed });
  assert.deepEqual(r, {
    ok: true,
    full: "registry.ollama.ai/library/llama3.2:1b",
    source: undefined,
    installed: true,
  });
  const cloud = resolveModelRef("gpt-oss:120b-cloud", { installed });
  assert.ok(cloud.ok && cloud.source === "cloud");
  const missing = resolveModelRef("llama3.2", { installed });
  assert.ok(missing.ok && !missing.installed);
});

// --- the server ----------------------------------------------------------------

Deno.test("sim: {model:a, Model:b} is recorded as model b; meſſages is messages", async () => {
  await withSim({}, async (sim) => {
    const res = await post(
      sim,
      "/api/chat",
      '{"model":"nope","Model":"llama3.2:1b","stream":false,' +
        '"meſſages":[{"role":"user","content":"hello there"}]}',
    );
    const body = await res.json();
    assert.equal(res.status, 200);
    assert.equal(body.done, true);
    const acted = sim.records[0].acted!;
    assert.deepEqual(acted.models, ["registry.ollama.ai/library/llama3.2:1b"]);
    assert.deepEqual(acted.texts, ["hello there"]);
    assert.equal(acted.stream, false);
  });
});

Deno.test("sim: unknown model is 404 in the route's dialect", async () => {
  await withSim({}, async (sim) => {
    const native = await post(sim, "/api/generate", {
      model: "nope",
      prompt: "x",
    });
    assert.equal(native.status, 404);
    assert.deepEqual(await native.json(), { error: "model 'nope' not found" });
    const openai = await post(sim, "/v1/chat/completions", {
      model: "nope",
      messages: [{ role: "user", content: "x" }],
    });
    assert.equal(openai.status, 404);
    const o = await openai.json();
    assert.equal(o.error.message, "model 'nope' not found");
    assert.equal(o.error.type, "not_found_error");
    const anthropic = await post(sim, "/v1/messages", {
      model: "nope",
      max_tokens: 5,
      messages: [{ role: "user", content: "x" }],
    });
    const a = await anthropic.json();
    assert.equal(a.type, "error");
    assert.equal(a.error.type, "not_found_error");
    assert.equal(sim.records[0].error, "model 'nope' not found");
    assert.deepEqual(sim.records[0].acted!.texts, ["x"]);
  });
});

Deno.test("sim: trailing slash redirects, unknown path 404, wrong method 405", async () => {
  await withSim({}, async (sim) => {
    const get = await fetch(sim.url + "/api/tags/?x=1", { redirect: "manual" });
    await get.body?.cancel();
    assert.equal(get.status, 301);
    assert.equal(get.headers.get("location"), "/api/tags?x=1");
    const postSlash = await fetch(sim.url + "/api/chat/", {
      method: "POST",
      body: "{}",
      redirect: "manual",
    });
    await postSlash.body?.cancel();
    assert.equal(postSlash.status, 307);
    assert.equal(postSlash.headers.get("location"), "/api/chat");

    const unknown = await fetch(sim.url + "/api/nothing");
    assert.equal(unknown.status, 404);
    assert.equal(await unknown.text(), "404 page not found");
    assert.match(unknown.headers.get("content-type")!, /text\/plain/);

    const wrong = await fetch(sim.url + "/api/chat");
    assert.equal(wrong.status, 405);
    assert.equal(await wrong.text(), "405 method not allowed");

    // Go unescapes the path before routing.
    const escaped = await fetch(sim.url + "/api/%74ags");
    assert.equal(escaped.status, 200);
    await escaped.body?.cancel();
  });
});

Deno.test("sim: foreign Origin and non-loopback Host are refused with 403", async () => {
  await withSim({}, async (sim) => {
    const evil = await fetch(sim.url + "/api/tags", {
      headers: { origin: "https://evil.example" },
    });
    await evil.body?.cancel();
    assert.equal(evil.status, 403);
    assert.equal(sim.records[0].acted, undefined);

    const local = await fetch(sim.url + "/api/tags", {
      headers: { origin: "http://localhost:3000" },
    });
    await local.body?.cancel();
    assert.equal(local.status, 200);
    assert.equal(
      local.headers.get("access-control-allow-origin"),
      "http://localhost:3000",
    );

    // fetch sets Host from the URL, so these go over a raw socket.
    assert.match(await rawGet(sim, "ollama.example.com"), /^HTTP\/1.1 403/);
    assert.match(await rawGet(sim, "[::1]"), /^HTTP\/1.1 403/); // no port: not an IP to Go
    assert.match(await rawGet(sim, "[::1]:11434"), /^HTTP\/1.1 200/);
    assert.match(await rawGet(sim, "192.168.1.20"), /^HTTP\/1.1 200/);
    assert.match(await rawGet(sim, "box.internal:8080"), /^HTTP\/1.1 200/);
    const named = await rawGet(sim, "LocalHost:11434");
    assert.match(named, /^HTTP\/1.1 200/);
    assert.match(named, /"version":"0.13.0"/);
  });
});

Deno.test("sim: NDJSON streams chunk by chunk and a disconnect marks cancelled", async () => {
  await withSim({ chunks: 5, chunkDelayMs: 100 }, async (sim) => {
    const res = await post(sim, "/api/generate", {
      model: "llama3.2",
      prompt: "hi",
    });
    assert.equal(res.headers.get("content-type"), "application/x-ndjson");
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    const lines = ndjson(first);
    assert.equal(lines.length, 1);
    assert.equal(lines[0].done, false);
    assert.equal(sim.records.length, 1); // recorded before the body ended
    await reader.cancel();
    for (let i = 0; i < 50 && !sim.records[0].cancelled; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(sim.records[0].cancelled, true);
  });
});

Deno.test("sim: num_predict bounds the chunks and ends with done_reason length", async () => {
  await withSim({ chunks: 5 }, async (sim) => {
    const res = await post(sim, "/api/generate", {
      model: "llama3.2",
      prompt: "hi",
      system: "be brief",
      options: { num_predict: 2.9, num_ctx: 4096.9 },
      keep_alive: "10m",
    });
    const lines = ndjson(await res.text());
    assert.equal(lines.length, 3);
    const last = lines[2];
    assert.equal(last.done, true);
    assert.equal(last.done_reason, "length");
    assert.equal(last.eval_count, 2);
    assert.ok(Array.isArray(last.context));
    const acted = sim.records[0].acted!;
    assert.equal(acted.numPredict, 2);
    assert.equal(acted.numCtx, 4096);
    assert.equal(acted.keepAlive, "10m");
    assert.deepEqual(acted.texts, ["hi", "be brief"]);

    const unlimited = await post(sim, "/api/chat", {
      model: "llama3.2",
      messages: [{ role: "user", content: "x" }],
      options: { num_predict: -1 },
    });
    const all = ndjson(await unlimited.text());
    assert.equal(all.length, 6);
    assert.equal(all[5].done_reason, "stop");
    assert.equal(all[5].eval_count, 5);
  });
});

Deno.test("sim: OpenAI chat SSE, usage chunk only with include_usage", async () => {
  await withSim({ chunks: 3 }, async (sim) => {
    const body = {
      model: "llama3.2",
      stream: true,
      max_tokens: 2,
      messages: [
        { role: "system", content: "sys" },
        { role: "user", content: [{ type: "text", text: "part" }] },
      ],
      tools: [{
        type: "function",
        function: { name: "f", description: "tool doc" },
      }],
    };
    const plain = sseData(
      await (await post(sim, "/v1/chat/completions", body)).text(),
    );
    assert.equal(plain.at(-1), "[DONE]");
    const chunks = plain.slice(0, -1).map((d) => JSON.parse(d));
    assert.equal(chunks.length, 3); // two tokens and the finish chunk
    assert.equal(chunks[2].choices[0].finish_reason, "length");
    assert.ok(chunks.every((c) => c.usage === undefined));
    assert.deepEqual(sim.records[0].acted!.texts, ["sys", "part", "tool doc"]);
    assert.equal(sim.records[0].acted!.maxTokens, 2);

    const withUsage = sseData(
      await (await post(sim, "/v1/chat/completions", {
        ...body,
        stream_options: { include_usage: true },
      })).text(),
    );
    const usage = JSON.parse(withUsage.at(-2)!);
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.completion_tokens, 2);

    const single = await (await post(sim, "/v1/completions", {
      model: "llama3.2",
      prompt: "p",
      suffix: "s",
    })).json();
    assert.equal(single.object, "text_completion");
    assert.equal(single.usage.completion_tokens, 3);
    assert.deepEqual(sim.records[2].acted!.texts, ["p", "s"]);
  });
});

Deno.test("sim: Anthropic stream events and texts", async () => {
  await withSim({ chunks: 4 }, async (sim) => {
    const res = await post(sim, "/v1/messages", {
      model: "llama3.2",
      max_tokens: 2,
      stream: true,
      system: [{ type: "text", text: "sys1" }, { type: "text", text: "sys2" }],
      messages: [{
        role: "user",
        content: [
          {
            type: "tool_result",
            tool_use_id: "t",
            content: [{ type: "text", text: "result" }],
          },
          { type: "text", text: "question" },
        ],
      }],
    });
    const text = await res.text();
    assert.deepEqual(sseEvents(text), [
      "message_start",
      "content_block_start",
      "content_block_delta",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    const data = sseData(text).map((d) => JSON.parse(d));
    assert.equal(typeof data[0].message.usage.input_tokens, "number");
    assert.equal(data[5].usage.output_tokens, 2);
    assert.equal(data[5].delta.stop_reason, "max_tokens");
    assert.deepEqual(sim.records[0].acted!.texts, [
      "sys1sys2",
      "result",
      "question",
    ]);
  });
});

Deno.test("sim: Responses stream ends in response.completed with usage", async () => {
  await withSim({ chunks: 3 }, async (sim) => {
    const res = await post(sim, "/v1/responses", {
      model: "llama3.2",
      stream: true,
      instructions: "inst",
      max_output_tokens: 10,
      input: [
        {
          role: "user",
          content: [{ type: "input_text", text: "a" }, {
            type: "input_text",
            text: "b",
          }],
        },
        { type: "function_call_output", call_id: "c", output: "out" },
      ],
    });
    const text = await res.text();
    const events = sseEvents(text);
    assert.equal(events[0], "response.created");
    assert.equal(
      events.filter((e) => e === "response.output_text.delta").length,
      3,
    );
    assert.equal(events.at(-1), "response.completed");
    const done = JSON.parse(sseData(text).at(-1)!);
    assert.equal(done.response.usage.output_tokens, 3);
    assert.equal(typeof done.response.usage.input_tokens, "number");
    const acted = sim.records[0].acted!;
    assert.deepEqual(acted.texts, ["inst", "ab", "out"]);
    assert.equal(acted.maxOutputTokens, 10);

    const bad = await post(sim, "/v1/responses", {
      model: "llama3.2",
      input: [{ type: "nope" }],
    });
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error.message, /unknown input item type/);
  });
});

Deno.test("sim: zstd is decoded on /v1 only; other encodings fail to parse", async () => {
  await withSim({}, async (sim) => {
    const payload = JSON.stringify({ model: "llama3.2", input: "zipped" });
    const z = await post(
      sim,
      "/v1/embeddings",
      new Uint8Array(zstdCompressSync(payload)),
      {
        "content-encoding": "zstd",
      },
    );
    assert.equal(z.status, 200);
    assert.equal((await z.json()).data.length, 1);
    assert.deepEqual(sim.records[0].acted!.texts, ["zipped"]);

    const native = await post(
      sim,
      "/api/embed",
      new Uint8Array(zstdCompressSync(payload)),
      {
        "content-encoding": "zstd",
      },
    );
    assert.equal(native.status, 400);
    await native.body?.cancel();
    assert.equal(sim.records[1].acted, undefined);
  });
});

Deno.test("sim: /v1 cloud passthrough reads the exact model key", async () => {
  await withSim({}, async (sim) => {
    const res = await post(
      sim,
      "/v1/chat/completions",
      '{"model":"gpt-oss:120b:cloud","Model":"llama3.2",' +
        '"messages":[{"role":"user","content":"leaves the machine"}]}',
    );
    assert.equal(res.status, 200);
    await res.body?.cancel();
    const acted = sim.records[0].acted!;
    assert.equal(acted.source, "cloud");
    assert.equal(acted.forwardedToCloud, true);
    assert.deepEqual(acted.models, ["registry.ollama.ai/library/gpt-oss:120b"]);
  });
});

Deno.test("sim: copy records [source, destination]; listing routes answer", async () => {
  await withSim({}, async (sim) => {
    const copy = await post(sim, "/api/copy", {
      source: "llama3.2",
      destination: "mine:v1",
    });
    assert.equal(copy.status, 200);
    assert.equal(await copy.text(), "");
    assert.deepEqual(sim.records[0].acted!.models, [
      "registry.ollama.ai/library/llama3.2:latest",
      "registry.ollama.ai/library/mine:v1",
    ]);
    const tags = await (await fetch(sim.url + "/api/tags")).json();
    assert.ok(tags.models.some((m: { name: string }) => m.name === "mine:v1"));
    const models = await (await fetch(sim.url + "/v1/models")).json();
    assert.equal(models.object, "list");
    assert.equal(models.data[0].object, "model");
    const one = await fetch(sim.url + "/v1/models/qwen2.5:7b");
    assert.equal((await one.json()).id, "qwen2.5:7b");
    assert.equal(
      await (await fetch(sim.url + "/")).text(),
      "Ollama is running",
    );
  });
});

Deno.test("sim: failMidStreamAfter ends a native stream with an error line", async () => {
  await withSim({ chunks: 5, failMidStreamAfter: 2 }, async (sim) => {
    const res = await post(sim, "/api/chat", {
      model: "llama3.2",
      messages: [{ role: "user", content: "x" }],
    });
    const lines = ndjson(await res.text());
    assert.equal(lines.length, 3);
    assert.equal(typeof lines[2].error, "string");
  });
});

Deno.test("sim: close() aborts open streams", async () => {
  const sim = await startOllamaSim({ chunks: 5, chunkDelayMs: 60_000 });
  const res = await post(sim, "/api/generate", {
    model: "llama3.2",
    prompt: "hi",
  });
  const reading = res.text().catch((e) => e);
  await sim.close();
  const outcome = await reading;
  assert.ok(outcome instanceof Error, `stream ended without error: ${outcome}`);
});

Deno.test("sim: transcription model comes from the form field, else the query", async () => {
  await withSim({}, async (sim) => {
    const form = new FormData();
    form.set("file", new File([new Uint8Array([1, 2, 3])], "a.wav"));
    const res = await fetch(
      sim.url + "/v1/audio/transcriptions?model=qwen2.5:7b",
      {
        method: "POST",
        body: form,
      },
    );
    assert.equal(res.status, 200);
    await res.body?.cancel();
    assert.deepEqual(sim.records[0].acted!.models, [
      "registry.ollama.ai/library/qwen2.5:7b",
    ]);
  });
});

Deno.test("run_sim --log-requests prints what reached it, without prompt texts", async () => {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-lock",
      "--allow-net=127.0.0.1",
      new URL("./sim/run_sim.ts", import.meta.url).pathname,
      "--port",
      String(port),
      "--log-requests",
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lines: string[] = [];
  const reading = (async () => {
    let text = "";
    for await (
      const chunk of child.stdout.pipeThrough(new TextDecoderStream())
    ) {
      text += chunk;
      const parts = text.split("\n");
      text = parts.pop()!;
      lines.push(...parts);
    }
  })();
  try {
    for (let i = 0; i < 100 && lines.length === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const response = await fetch(`http://127.0.0.1:${port}/api/chat`, {
      method: "POST",
      headers: { "x-butler-client": "app" },
      body: JSON.stringify({
        model: "llama3.2",
        messages: [{ role: "user", content: "a private prompt" }],
        stream: false,
        options: { num_predict: 7 },
      }),
    });
    await response.body?.cancel();
    for (let i = 0; i < 100 && lines.length < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const logged = JSON.parse(lines[1]);
    assert.equal(logged.path, "/api/chat");
    assert.equal(logged.client, "app");
    assert.equal(logged.acted.numPredict, 7);
    assert.deepEqual(logged.acted.models, [
      "registry.ollama.ai/library/llama3.2:latest",
    ]);
    assert.doesNotMatch(lines.join("\n"), /private prompt/);
  } finally {
    child.kill("SIGINT");
    await child.status;
    await reading;
  }
});
