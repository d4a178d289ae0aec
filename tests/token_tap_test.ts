import assert from "node:assert/strict";
import {
  EventFramer,
  type StreamEvent,
  type StreamFormat,
  type TapDialect,
  type TokenCounts,
} from "../src/forward/token_tap.ts";
import { answerStream } from "../src/forward/answer_stream.ts";
import { awkwardSplits, concat, cut } from "./support/chunks.ts";

// --- Fixtures, shaped like what Ollama writes ----------------------------

const encoder = new TextEncoder();
const MODEL = "llama3.2:1b";
const AT = "2026-01-02T03:04:05.678Z";

function ndjson(objects: unknown[]): string {
  return objects.map((o) => JSON.stringify(o) + "\n").join("");
}

function sse(events: [name: string | undefined, data: unknown][]): string {
  return events.map(([name, data]) => {
    const payload = typeof data === "string" ? data : JSON.stringify(data);
    return (name ? `event: ${name}\n` : "") + `data: ${payload}\n\n`;
  }).join("");
}

// Text with multi-byte UTF-8 and text that looks like the keys the tap
// looks for: it must not be mistaken for them.
const TEXTS = ["Héllo", " wörld 🌍", ' "done":true "usage":{', " 終わり"];

const NATIVE_CHAT = ndjson([
  ...TEXTS.map((content) => ({
    model: MODEL,
    created_at: AT,
    message: { role: "assistant", content },
    done: false,
  })),
  {
    model: MODEL,
    created_at: AT,
    message: { role: "assistant", content: "" },
    done: true,
    done_reason: "stop",
    total_duration: 123,
    load_duration: 4,
    prompt_eval_count: 26,
    prompt_eval_duration: 5,
    eval_count: 4,
    eval_duration: 6,
  },
]);

function chatChunk(delta: unknown, finish: string | null) {
  return {
    id: "chatcmpl-42",
    object: "chat.completion.chunk",
    created: 1767322245,
    model: MODEL,
    system_fingerprint: "fp_ollama",
    choices: [{ index: 0, delta, finish_reason: finish }],
  };
}

const USAGE = { prompt_tokens: 26, completion_tokens: 4, total_tokens: 30 };

function openaiChat(includeUsage: boolean): string {
  const events: [undefined, unknown][] = TEXTS.map((content, i) => [
    undefined,
    chatChunk(i === 0 ? { role: "assistant", content } : { content }, null),
  ]);
  events.push([undefined, chatChunk({}, "stop")]);
  if (includeUsage) {
    events.push([undefined, {
      ...chatChunk({}, "stop"),
      choices: [],
      usage: USAGE,
    }]);
  }
  events.push([undefined, "[DONE]"]);
  return sse(events);
}

/** /v1/completions with include_usage: Ollama puts zero usage on each chunk. */
function openaiCompletions(): string {
  const chunk = (text: string, finish: string | null, usage: unknown) => ({
    id: "cmpl-7",
    object: "text_completion",
    created: 1767322245,
    choices: [{ text, index: 0, finish_reason: finish }],
    model: MODEL,
    system_fingerprint: "fp_ollama",
    usage,
  });
  const zero = { prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
  return sse([
    ...TEXTS.map((
      t,
    ): [undefined, unknown] => [undefined, chunk(t, null, zero)]),
    [undefined, chunk("", "stop", zero)],
    [undefined, { ...chunk("", null, USAGE), choices: [] }],
    [undefined, "[DONE]"],
  ]);
}

const ANTHROPIC = sse([
  ["message_start", {
    type: "message_start",
    message: {
      id: "msg_1",
      type: "message",
      role: "assistant",
      model: MODEL,
      content: [],
      usage: { input_tokens: 20, output_tokens: 0 },
    },
  }],
  ["content_block_start", {
    type: "content_block_start",
    index: 0,
    content_block: { type: "text", text: "" },
  }],
  ["ping", { type: "ping" }],
  ...TEXTS.map((text): [string, unknown] => [
    "content_block_delta",
    {
      type: "content_block_delta",
      index: 0,
      delta: { type: "text_delta", text },
    },
  ]),
  ["content_block_stop", { type: "content_block_stop", index: 0 }],
  ["message_delta", {
    type: "message_delta",
    delta: { stop_reason: "end_turn" },
    usage: { input_tokens: 26, output_tokens: 4 },
  }],
  ["message_stop", { type: "message_stop" }],
]);

function responsesStream(): string {
  let seq = 0;
  const event = (type: string, fields: Record<string, unknown>) =>
    [type, { ...fields, sequence_number: seq++, type }] as [string, unknown];
  const base = { id: "resp_9", object: "response", model: MODEL };
  return sse([
    event("response.created", { response: { ...base, status: "in_progress" } }),
    event("response.in_progress", {
      response: { ...base, status: "in_progress" },
    }),
    event("response.output_item.added", {
      output_index: 0,
      item: {
        id: "msg_9",
        type: "message",
        status: "in_progress",
        content: [],
      },
    }),
    event("response.content_part.added", {
      item_id: "msg_9",
      output_index: 0,
      content_index: 0,
      part: { type: "output_text", text: "" },
    }),
    ...TEXTS.map((delta) =>
      event("response.output_text.delta", {
        item_id: "msg_9",
        output_index: 0,
        content_index: 0,
        delta,
      })
    ),
    event("response.output_text.done", { item_id: "msg_9", text: "…" }),
    event("response.completed", {
      response: {
        ...base,
        status: "completed",
        usage: { input_tokens: 26, output_tokens: 4, total_tokens: 30 },
      },
    }),
  ]);
}

// --- Helpers --------------------------------------------------------------

interface TapRun {
  output: Uint8Array[];
  calls: TokenCounts[];
}

async function runTap(
  chunks: Uint8Array[],
  options: {
    format: StreamFormat;
    dialect: TapDialect;
    maxParseBytes?: number;
  },
): Promise<TapRun> {
  const calls: TokenCounts[] = [];
  const tap = answerStream(ReadableStream.from(chunks), {
    count: options,
    onEnd: (answer) => calls.push(answer.tokens!),
  });
  const output: Uint8Array[] = [];
  await tap.pipeTo(
    new WritableStream({ write: (chunk) => void output.push(chunk) }),
  );
  return { output, calls };
}

async function assertTapReads(
  text: string,
  options: { format: StreamFormat; dialect: TapDialect },
  expected: TokenCounts,
): Promise<void> {
  const bytes = encoder.encode(text);
  for (const chunks of awkwardSplits(bytes)) {
    const { output, calls } = await runTap(chunks, options);
    assert.equal(output.length, chunks.length);
    output.forEach((chunk, i) =>
      assert.equal(chunk, chunks[i], "the same Uint8Array passes through")
    );
    assert.deepEqual(calls, [expected], `split ${chunks.map((c) => c.length)}`);
  }
}

// --- Streams, per dialect ------------------------------------------------

Deno.test("native NDJSON: final counts and content chunks, any split", async () => {
  await assertTapReads(NATIVE_CHAT, { format: "ndjson", dialect: "native" }, {
    prompt: 26,
    generated: 4,
    contentChunks: 4,
    complete: true,
  });
});

Deno.test("native NDJSON with \\r\\n line ends", async () => {
  const text = NATIVE_CHAT.replaceAll("\n", "\r\n");
  await assertTapReads(text, { format: "ndjson", dialect: "native" }, {
    prompt: 26,
    generated: 4,
    contentChunks: 4,
    complete: true,
  });
});

Deno.test("native NDJSON: a last line without newline still counts", async () => {
  const { calls } = await runTap(
    [encoder.encode(NATIVE_CHAT.slice(0, -1))],
    { format: "ndjson", dialect: "native" },
  );
  assert.deepEqual(calls, [{
    prompt: 26,
    generated: 4,
    contentChunks: 4,
    complete: true,
  }]);
});

Deno.test("native NDJSON: an error line mid-stream is reported", async () => {
  const text = ndjson([
    { model: MODEL, created_at: AT, response: "a", done: false },
    { error: "model runner has unexpectedly stopped" },
  ]);
  await assertTapReads(text, { format: "ndjson", dialect: "native" }, {
    contentChunks: 1,
    complete: false,
    errorInStream: "model runner has unexpectedly stopped",
  });
});

Deno.test("openai chat SSE with include_usage: usage chunk read", async () => {
  await assertTapReads(
    openaiChat(true),
    { format: "sse", dialect: "openai_chat" },
    { prompt: 26, generated: 4, contentChunks: 4, complete: true },
  );
});

Deno.test("openai chat SSE with \\r\\n and with bare \\r line ends", async () => {
  for (const ending of ["\r\n", "\r"]) {
    await assertTapReads(
      openaiChat(true).replaceAll("\n", ending),
      { format: "sse", dialect: "openai_chat" },
      { prompt: 26, generated: 4, contentChunks: 4, complete: true },
    );
  }
});

Deno.test("openai chat SSE without usage: incomplete, chunks counted", async () => {
  await assertTapReads(
    openaiChat(false),
    { format: "sse", dialect: "openai_chat" },
    { contentChunks: 4, complete: false },
  );
});

Deno.test("openai completions: zero usage on chunks is not the count", async () => {
  await assertTapReads(
    openaiCompletions(),
    { format: "sse", dialect: "openai_completions" },
    { prompt: 26, generated: 4, contentChunks: 4, complete: true },
  );
});

Deno.test("openai completions cut before the usage chunk: not complete", async () => {
  // Each chunk carries zero usage; taking it as the count would make a
  // hang-up before the final usage chunk free.
  const text = openaiCompletions();
  const beforeUsage = text.slice(0, text.indexOf('"choices":[]'));
  const truncated = beforeUsage.slice(0, beforeUsage.lastIndexOf("data: "));
  const { calls } = await runTap([encoder.encode(truncated)], {
    format: "sse",
    dialect: "openai_completions",
  });
  assert.deepEqual(calls, [{ contentChunks: 4, complete: false }]);
});

Deno.test("openai SSE: an error event is reported", async () => {
  const text = sse([
    [undefined, chatChunk({ content: "x" }, null)],
    [undefined, { error: { message: "boom", type: "api_error" } }],
  ]);
  await assertTapReads(text, { format: "sse", dialect: "openai_chat" }, {
    contentChunks: 1,
    complete: false,
    errorInStream: "boom",
  });
});

Deno.test("anthropic SSE: message_start and message_delta usage", async () => {
  await assertTapReads(ANTHROPIC, { format: "sse", dialect: "anthropic" }, {
    prompt: 26, // message_delta's real count replaces message_start's estimate
    generated: 4,
    contentChunks: 4,
    complete: true,
  });
});

Deno.test("anthropic SSE: error event", async () => {
  const text = sse([
    ["error", {
      type: "error",
      error: { type: "overloaded_error", message: "Overloaded" },
    }],
  ]);
  await assertTapReads(text, { format: "sse", dialect: "anthropic" }, {
    contentChunks: 0,
    complete: false,
    errorInStream: "Overloaded",
  });
});

Deno.test("responses SSE: response.completed usage", async () => {
  await assertTapReads(
    responsesStream(),
    { format: "sse", dialect: "responses" },
    { prompt: 26, generated: 4, contentChunks: 4, complete: true },
  );
});

Deno.test("SSE: an unterminated last event is discarded, as clients do", async () => {
  const text = openaiChat(true);
  const withoutBlankLine = text.slice(0, text.lastIndexOf("data: {")) +
    `data: ${
      JSON.stringify({ ...chatChunk({}, "stop"), choices: [], usage: USAGE })
    }\n`;
  const { calls } = await runTap([encoder.encode(withoutBlankLine)], {
    format: "sse",
    dialect: "openai_chat",
  });
  assert.deepEqual(calls, [{ contentChunks: 4, complete: false }]);
});

// --- Non-streamed bodies --------------------------------------------------

Deno.test("json bodies: counts per dialect, any split", async () => {
  const cases: [TapDialect, unknown][] = [
    ["native", {
      model: MODEL,
      created_at: AT,
      response: "Héllo 🌍",
      done: true,
      context: [1, 2, 3],
      prompt_eval_count: 26,
      eval_count: 4,
    }],
    ["openai_chat", {
      id: "c",
      object: "chat.completion",
      choices: [{ index: 0, message: { role: "assistant", content: "ü" } }],
      usage: USAGE,
    }],
    ["openai_completions", {
      id: "c",
      object: "text_completion",
      choices: [{ text: "ü", index: 0, finish_reason: "stop" }],
      usage: USAGE,
    }],
    ["anthropic", {
      id: "m",
      type: "message",
      content: [{ type: "text", text: "ü" }],
      usage: { input_tokens: 26, output_tokens: 4 },
    }],
    ["responses", {
      id: "r",
      object: "response",
      status: "completed",
      usage: { input_tokens: 26, output_tokens: 4, total_tokens: 30 },
      max_output_tokens: null,
    }],
  ];
  for (const [dialect, body] of cases) {
    await assertTapReads(JSON.stringify(body) + "\n", {
      format: "json",
      dialect,
    }, { prompt: 26, generated: 4, contentChunks: 0, complete: true });
  }
});

Deno.test("json error bodies are reported in each dialect", async () => {
  const cases: [TapDialect, unknown, string][] = [
    ["native", { error: "model 'x' not found" }, "model 'x' not found"],
    ["openai_chat", {
      error: { message: "nope", type: "invalid_request_error" },
    }, "nope"],
    ["anthropic", {
      type: "error",
      error: { type: "not_found_error", message: "gone" },
    }, "gone"],
  ];
  for (const [dialect, body, message] of cases) {
    const { calls } = await runTap([encoder.encode(JSON.stringify(body))], {
      format: "json",
      dialect,
    });
    assert.deepEqual(calls, [{
      contentChunks: 0,
      complete: false,
      errorInStream: message,
    }]);
  }
});

Deno.test("json body over the parse limit: counts read from its tail", async () => {
  const body = JSON.stringify({
    model: MODEL,
    message: {
      role: "assistant",
      content: "z".repeat(5000),
      tool_calls: [{ function: { arguments: { eval_count: 999 } } }],
    },
    done: true,
    prompt_eval_count: 26,
    eval_count: 4,
  });
  const { calls, output } = await runTap(
    cut(encoder.encode(body), [1000, 2000, 3000, 4000]),
    { format: "json", dialect: "native", maxParseBytes: 1024 },
  );
  assert.equal(output.length, 5);
  assert.deepEqual(calls, [{
    prompt: 26,
    generated: 4,
    contentChunks: 0,
    complete: true,
  }]);
});

Deno.test("a line longer than the parse limit passes but is not parsed", async () => {
  const long = ndjson([
    { model: MODEL, response: "a", done: false },
    {
      model: MODEL,
      done: true,
      context: Array(500).fill(1234),
      eval_count: 4,
    },
  ]);
  const bytes = encoder.encode(long);
  const { calls, output } = await runTap(cut(bytes, [100, 900]), {
    format: "ndjson",
    dialect: "native",
    maxParseBytes: 512,
  });
  assert.deepEqual(concat(output), bytes);
  assert.deepEqual(calls, [{ contentChunks: 1, complete: false }]);
});

// --- Endings: cancel, error -----------------------------------------------

Deno.test("client hang-up mid-stream: onEnd once, incomplete, chunks so far", async () => {
  const lines = NATIVE_CHAT.split("\n").slice(0, 3).map((l) => l + "\n");
  let upstreamCancelled = false;
  let sent = 0;
  const upstream = new ReadableStream<Uint8Array>({
    pull(controller) {
      // Three content lines, then a stall (the model is still generating).
      if (sent < lines.length) {
        controller.enqueue(encoder.encode(lines[sent++]));
      } else return new Promise(() => {});
    },
    cancel() {
      upstreamCancelled = true;
    },
  });
  const calls: TokenCounts[] = [];
  const reader = answerStream(upstream, {
    count: { format: "ndjson", dialect: "native" },
    onEnd: (answer) => calls.push(answer.tokens!),
  }).getReader();

  for (let i = 0; i < 3; i++) assert.equal((await reader.read()).done, false);
  await reader.cancel("client went away");
  await settle();

  assert.deepEqual(calls, [{ contentChunks: 3, complete: false }]);
  assert.ok(upstreamCancelled, "the hang-up reaches the upstream body");
});

Deno.test("upstream error mid-stream: onEnd once with what was counted", async () => {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const upstream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
  });
  const calls: TokenCounts[] = [];
  const reader = answerStream(upstream, {
    count: { format: "sse", dialect: "anthropic" },
    onEnd: (answer) => calls.push(answer.tokens!),
  }).getReader();

  const firstEvents = ANTHROPIC.split("\n\n").slice(0, 5).join("\n\n") + "\n\n";
  controller.enqueue(encoder.encode(firstEvents));
  await reader.read();
  controller.error(new Error("connection reset"));
  await assert.rejects(reader.read(), /connection reset/);
  await settle();

  // message_start, content_block_start, ping, 2 deltas
  assert.deepEqual(calls, [{ prompt: 20, contentChunks: 2, complete: false }]);
});

Deno.test("onEnd that throws does not break the stream", async () => {
  const bytes = encoder.encode(NATIVE_CHAT);
  const tap = answerStream(ReadableStream.from([bytes]), {
    count: { format: "ndjson", dialect: "native" },
    onEnd: () => {
      throw new Error("accounting broke");
    },
  });
  const output = await new Response(tap).bytes();
  assert.deepEqual(output, bytes);
});

Deno.test("malformed JSON in a counted line is skipped", async () => {
  const text = '{"done":false,"response":"a"}\n{"done":true,"eval_count":\n';
  const { calls } = await runTap([encoder.encode(text)], {
    format: "ndjson",
    dialect: "native",
  });
  assert.deepEqual(calls, [{ contentChunks: 1, complete: false }]);
});

// --- The framer on its own -----------------------------------------------

Deno.test("EventFramer: SSE fields, comments, multi-line data, end offsets", () => {
  const text = ": keep-alive\n" +
    "event: first\ndata:no space\ndata:  two spaces\n\n" +
    "id: 7\nretry: 10\n\n" + // no data: no event
    "data: [DONE]\n\n";
  const bytes = encoder.encode(text);
  const seen: [StreamEvent, number][] = [];
  new EventFramer("sse").push(bytes, (event, end) => {
    seen.push([event, end]);
  });
  assert.deepEqual(seen.map(([e]) => e), [
    { name: "first", data: "no space\n two spaces" },
    { data: "[DONE]" },
  ]);
  const firstEnd = text.indexOf("\n\n", text.indexOf("two spaces")) + 2;
  assert.deepEqual(seen.map(([, end]) => end), [firstEnd, bytes.length]);
});

Deno.test("EventFramer: returning false stops the chunk", () => {
  const bytes = encoder.encode("a\nb\nc\n");
  const seen: string[] = [];
  new EventFramer("ndjson").push(bytes, (event) => {
    seen.push(event.data);
    return seen.length < 2;
  });
  assert.deepEqual(seen, ["a", "b"]);
});

/** Lets queued stream callbacks run (no timing involved). */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
  await new Promise((resolve) => setTimeout(resolve, 0));
}
