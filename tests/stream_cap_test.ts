import assert from "node:assert/strict";
import { StreamCapper } from "../src/forward/stream_cap.ts";
import type { TapDialect, TokenCounts } from "../src/forward/token_tap.ts";
import { answerStream } from "../src/forward/answer_stream.ts";
import { awkwardSplits, concat } from "./support/chunks.ts";

// --- Fixtures, shaped like what Ollama writes ----------------------------

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const MODEL = "llama3.2:1b";
const AT = "2026-01-02T03:04:05.678Z";
const TEXTS = ["Héllo", " wörld 🌍", " and", " more", " 終わり"];

function sse(events: [name: string | undefined, data: unknown][]): string {
  return events.map(([name, data]) => {
    const payload = typeof data === "string" ? data : JSON.stringify(data);
    return (name ? `event: ${name}\n` : "") + `data: ${payload}\n\n`;
  }).join("");
}

function nativeChat(count: number): string[] {
  const lines = TEXTS.slice(0, count).map((content) =>
    JSON.stringify({
      model: MODEL,
      created_at: AT,
      message: { role: "assistant", content },
      done: false,
    }) + "\n"
  );
  lines.push(
    JSON.stringify({
      model: MODEL,
      created_at: AT,
      message: { role: "assistant", content: "" },
      done: true,
      done_reason: "stop",
      prompt_eval_count: 9,
      eval_count: count,
    }) + "\n",
  );
  return lines;
}

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

/** One string per SSE event. */
function openaiChat(count: number): string[] {
  return [
    ...TEXTS.slice(0, count).map((content, i) =>
      sse([[
        undefined,
        chatChunk(i === 0 ? { role: "assistant", content } : { content }, null),
      ]])
    ),
    sse([[undefined, chatChunk({}, "stop")]]),
    sse([[undefined, {
      ...chatChunk({}, "stop"),
      choices: [],
      usage: { prompt_tokens: 9, completion_tokens: count, total_tokens: 9 },
    }]]),
    "data: [DONE]\n\n",
  ];
}

function openaiCompletions(count: number): string[] {
  const chunk = (text: string, finish: string | null) => ({
    id: "cmpl-7",
    object: "text_completion",
    created: 1767322245,
    choices: [{ text, index: 0, finish_reason: finish }],
    model: MODEL,
    system_fingerprint: "fp_ollama",
  });
  return [
    ...TEXTS.slice(0, count).map((t) => sse([[undefined, chunk(t, null)]])),
    sse([[undefined, chunk("", "stop")]]),
    "data: [DONE]\n\n",
  ];
}

function anthropic(count: number): string[] {
  return [
    sse([["message_start", {
      type: "message_start",
      message: {
        id: "msg_1",
        type: "message",
        role: "assistant",
        model: MODEL,
        content: [],
        usage: { input_tokens: 9, output_tokens: 0 },
      },
    }]]),
    sse([["content_block_start", {
      type: "content_block_start",
      index: 0,
      content_block: { type: "text", text: "" },
    }]]),
    ...TEXTS.slice(0, count).map((text) =>
      sse([["content_block_delta", {
        type: "content_block_delta",
        index: 0,
        delta: { type: "text_delta", text },
      }]])
    ),
    sse([["content_block_stop", { type: "content_block_stop", index: 0 }]]),
    sse([["message_delta", {
      type: "message_delta",
      delta: { stop_reason: "end_turn" },
      usage: { input_tokens: 9, output_tokens: count },
    }]]),
    sse([["message_stop", { type: "message_stop" }]]),
  ];
}

function responses(count: number): string[] {
  let seq = 0;
  const event = (type: string, fields: Record<string, unknown>) =>
    sse([[type, { ...fields, sequence_number: seq++, type }]]);
  const base = {
    id: "resp_9",
    object: "response",
    created_at: 1767322245,
    model: MODEL,
    output: [],
    usage: null,
  };
  return [
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
        role: "assistant",
        content: [],
      },
    }),
    event("response.content_part.added", {
      item_id: "msg_9",
      output_index: 0,
      content_index: 0,
      part: { type: "output_text", text: "", annotations: [], logprobs: [] },
    }),
    ...TEXTS.slice(0, count).map((delta) =>
      event("response.output_text.delta", {
        item_id: "msg_9",
        output_index: 0,
        content_index: 0,
        delta,
        logprobs: [],
      })
    ),
    event("response.completed", {
      response: {
        ...base,
        status: "completed",
        usage: { input_tokens: 9, output_tokens: count },
      },
    }),
  ];
}

// --- Helpers --------------------------------------------------------------

interface CapRun {
  output: Uint8Array[];
  text: string;
  cuts: number;
  upstreamCancelled: boolean;
}

async function runCap(
  chunks: Uint8Array[],
  options: { dialect: TapDialect; cap: number; maxHeldBytes?: number },
): Promise<CapRun> {
  let cuts = 0;
  let upstreamCancelled = false;
  let next = 0;
  const upstream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (next < chunks.length) controller.enqueue(chunks[next++]);
      else controller.close();
    },
    cancel() {
      upstreamCancelled = true;
    },
  }, { highWaterMark: 0 });
  const format = options.dialect === "native" ? "ndjson" : "sse";
  const output: Uint8Array[] = [];
  let ends = 0;
  await answerStream(upstream, {
    count: { format, dialect: options.dialect },
    cap: {
      limit: options.cap,
      maxHeldBytes: options.maxHeldBytes,
      onCut: () => cuts++,
    },
    onEnd: () => ends++,
  }).pipeTo(
    new WritableStream({ write: (chunk) => void output.push(chunk) }),
  );
  assert.equal(ends, 1, "onEnd is called once");
  return {
    output,
    text: decoder.decode(concat(output)),
    cuts,
    upstreamCancelled,
  };
}

function sseEvents(text: string): { name?: string; data: string }[] {
  return text.split("\n\n").filter((block) => block !== "").map((block) => {
    const name = /^event: (.*)$/m.exec(block)?.[1];
    const data = /^data: (.*)$/m.exec(block)![1];
    return name === undefined ? { data } : { name, data };
  });
}

/**
 * For every split of the full stream: the output is the first `kept` events
 * byte for byte, then exactly `ending`; the cut is reported once and the
 * upstream is cancelled.
 */
async function assertCutsTo(
  events: string[],
  options: { dialect: TapDialect; cap: number },
  kept: number,
  checkEnding: (ending: string) => void,
): Promise<void> {
  const bytes = encoder.encode(events.join(""));
  const prefix = events.slice(0, kept).join("");
  let ending: string | undefined;
  for (const chunks of awkwardSplits(bytes)) {
    const run = await runCap(chunks, options);
    const where = `split ${chunks.map((c) => c.length)}`;
    assert.ok(run.text.startsWith(prefix), where);
    const thisEnding = run.text.slice(prefix.length);
    if (ending === undefined) {
      ending = thisEnding;
      checkEnding(ending);
    }
    assert.equal(thisEnding, ending, where);
    assert.equal(run.cuts, 1, where);
    assert.ok(run.upstreamCancelled, where);
  }
}

// --- Cutting, per dialect ---------------------------------------------------

Deno.test("openai chat: cut after N chunks with finish_reason length", async () => {
  await assertCutsTo(
    openaiChat(5),
    { dialect: "openai_chat", cap: 3 },
    3,
    (ending) => {
      const events = sseEvents(ending);
      assert.equal(events.length, 2);
      assert.deepEqual(JSON.parse(events[0].data), {
        id: "chatcmpl-42",
        object: "chat.completion.chunk",
        created: 1767322245,
        model: MODEL,
        system_fingerprint: "fp_ollama",
        choices: [{ index: 0, delta: {}, finish_reason: "length" }],
      });
      assert.equal(events[1].data, "[DONE]");
    },
  );
});

Deno.test("openai completions: cut with a text_completion length chunk", async () => {
  await assertCutsTo(
    openaiCompletions(5),
    { dialect: "openai_completions", cap: 2 },
    2,
    (ending) => {
      const events = sseEvents(ending);
      assert.deepEqual(JSON.parse(events[0].data), {
        id: "cmpl-7",
        object: "text_completion",
        created: 1767322245,
        model: MODEL,
        system_fingerprint: "fp_ollama",
        choices: [{ text: "", index: 0, finish_reason: "length" }],
      });
      assert.equal(events[1].data, "[DONE]");
      assert.equal(events.length, 2);
    },
  );
});

Deno.test("native chat: cut with a done_reason length line", async () => {
  await assertCutsTo(
    nativeChat(5),
    { dialect: "native", cap: 2 },
    2,
    (ending) => {
      assert.ok(ending.endsWith("\n"));
      assert.equal(ending.split("\n").length, 2, "exactly one line");
      assert.deepEqual(JSON.parse(ending), {
        model: MODEL,
        created_at: AT,
        message: { role: "assistant", content: "" },
        done: true,
        done_reason: "length",
      });
    },
  );
});

Deno.test("native generate: the ending has a response field", async () => {
  const lines = ["a", "b", "c"].map((response) =>
    JSON.stringify({ model: MODEL, created_at: AT, response, done: false }) +
    "\n"
  );
  const run = await runCap([encoder.encode(lines.join(""))], {
    dialect: "native",
    cap: 1,
  });
  assert.deepEqual(JSON.parse(run.text.slice(lines[0].length)), {
    model: MODEL,
    created_at: AT,
    response: "",
    done: true,
    done_reason: "length",
  });
});

Deno.test("anthropic: block stop, max_tokens message_delta, message_stop", async () => {
  await assertCutsTo(
    anthropic(5),
    { dialect: "anthropic", cap: 3 },
    2 + 3, // message_start, content_block_start, three deltas
    (ending) => {
      assert.deepEqual(sseEvents(ending), [
        {
          name: "content_block_stop",
          data: JSON.stringify({ type: "content_block_stop", index: 0 }),
        },
        {
          name: "message_delta",
          data: JSON.stringify({
            type: "message_delta",
            delta: { stop_reason: "max_tokens", stop_sequence: null },
            usage: { output_tokens: 3, input_tokens: 9 },
          }),
        },
        {
          name: "message_stop",
          data: JSON.stringify({ type: "message_stop" }),
        },
      ]);
    },
  );
});

Deno.test("responses: open item closed, then response.incomplete", async () => {
  await assertCutsTo(
    responses(5),
    { dialect: "responses", cap: 2 },
    4 + 2,
    (ending) => {
      const events = sseEvents(ending);
      assert.deepEqual(events.map((e) => e.name), [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
      ]);
      const data = events.map((e) => JSON.parse(e.data));
      // Sequence numbers continue after the last event sent (5).
      assert.deepEqual(data.map((d) => d.sequence_number), [6, 7, 8, 9]);
      assert.deepEqual(data.map((d) => d.type), events.map((e) => e.name));
      assert.equal(data[0].text, "Héllo wörld 🌍");
      assert.equal(data[2].item.status, "incomplete");
      assert.deepEqual(data[2].item.content, [{
        type: "output_text",
        text: "Héllo wörld 🌍",
        annotations: [],
        logprobs: [],
      }]);
      const response = data[3].response;
      assert.equal(response.id, "resp_9");
      assert.equal(response.model, MODEL);
      assert.equal(response.status, "incomplete");
      assert.deepEqual(response.incomplete_details, {
        reason: "max_output_tokens",
      });
      assert.deepEqual(response.output, [data[2].item]);
      assert.equal(response.usage, null);
    },
  );
});

Deno.test("SSE with \\r\\n line ends is cut at the same event", async () => {
  const events = openaiChat(5).map((e) => e.replaceAll("\n", "\r\n"));
  const bytes = encoder.encode(events.join(""));
  for (const chunks of awkwardSplits(bytes)) {
    const run = await runCap(chunks, { dialect: "openai_chat", cap: 3 });
    assert.ok(run.text.startsWith(events.slice(0, 3).join("")));
    const rest = sseEvents(run.text.slice(events.slice(0, 3).join("").length));
    assert.equal(JSON.parse(rest[0].data).choices[0].finish_reason, "length");
    assert.equal(run.cuts, 1);
  }
});

// --- Not cutting ------------------------------------------------------------

Deno.test("a stream within the cap passes unchanged, chunks whole", async () => {
  const cases: [TapDialect, string[]][] = [
    ["openai_chat", openaiChat(3)],
    ["openai_completions", openaiCompletions(3)],
    ["native", nativeChat(3)],
    ["anthropic", anthropic(3)],
    ["responses", responses(3)],
  ];
  for (const [dialect, events] of cases) {
    const bytes = encoder.encode(events.join(""));
    for (const chunks of awkwardSplits(bytes)) {
      const run = await runCap(chunks, { dialect, cap: 3 });
      assert.deepEqual(concat(run.output), bytes, dialect);
      assert.equal(run.cuts, 0, dialect);
    }
  }
});

Deno.test("chunks before the cap are forwarded as the same objects", async () => {
  const events = openaiChat(5).map((e) => encoder.encode(e));
  const run = await runCap(events, { dialect: "openai_chat", cap: 3 });
  for (let i = 0; i < 3; i++) assert.equal(run.output[i], events[i]);
  assert.equal(run.cuts, 1);
});

Deno.test("cap 0 cuts at the first content chunk", async () => {
  const events = anthropic(2);
  const run = await runCap([encoder.encode(events.join(""))], {
    dialect: "anthropic",
    cap: 0,
  });
  assert.ok(run.text.startsWith(events[0] + events[1]));
  assert.deepEqual(
    sseEvents(run.text).map((e) => e.name),
    [
      "message_start",
      "content_block_start",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ],
  );
});

Deno.test("a runaway non-content event after the cap is cut", async () => {
  const events = openaiChat(2);
  const huge = "data: " + "x".repeat(200) + "\n"; // never terminated
  const run = await runCap(
    [encoder.encode(events.slice(0, 2).join("")), encoder.encode(huge)],
    { dialect: "openai_chat", cap: 2, maxHeldBytes: 100 },
  );
  assert.equal(run.cuts, 1);
  assert.ok(!run.text.includes("xxx"));
  assert.equal(sseEvents(run.text).at(-1)!.data, "[DONE]");
});

Deno.test("options are validated", () => {
  const onCut = () => {};
  assert.throws(
    () =>
      new StreamCapper({ dialect: "native", format: "ndjson", cap: -1, onCut }),
    /StreamCapper cap: -1 is not allowed/,
  );
  assert.throws(
    () =>
      new StreamCapper({
        dialect: "native",
        format: "ndjson",
        cap: 1.5,
        onCut,
      }),
    /cap: 1.5/,
  );
  assert.throws(
    () =>
      new StreamCapper({
        dialect: "anthropic",
        format: "ndjson",
        cap: 1,
        onCut,
      }),
    /format: "ndjson" does not match dialect "anthropic"; it streams sse/,
  );
});

// --- With the token counter ---------------------------------------------

Deno.test("counts what the upstream sent in the chunks read, charged as chunks", async () => {
  const events = openaiChat(5);
  for (
    const [chunks, expected] of [
      // One chunk: the whole answer, usage included, was read from the
      // upstream; the upstream's own count is charged.
      [[encoder.encode(events.join(""))], {
        prompt: 9,
        generated: 5,
        contentChunks: 5,
        complete: true,
      }],
      // One event per chunk, as Ollama writes: the dropped fourth is counted
      // (the upstream generated it), nothing after it is read.
      [events.map((e) => encoder.encode(e)), {
        contentChunks: 4,
        complete: false,
      }],
    ] as const
  ) {
    const calls: (TokenCounts | undefined)[] = [];
    const cutCalls: number[] = [];
    await answerStream(ReadableStream.from(chunks), {
      count: { format: "sse", dialect: "openai_chat" },
      cap: { limit: 3, onCut: () => cutCalls.push(1) },
      onEnd: (answer) => calls.push(answer.tokens),
    }).pipeTo(new WritableStream());
    assert.deepEqual(calls, [expected]);
    assert.equal(cutCalls.length, 1);
  }
});
