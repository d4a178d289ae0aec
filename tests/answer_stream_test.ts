/**
 * The one stage a streamed answer passes on its way to the client: bytes
 * out, byte counts, how it ended (reported once), usage stripping and the
 * cap together, and error endings, across awkward chunk splits.
 */

import assert from "node:assert/strict";
import {
  type AnswerEnd,
  answerStream,
  type AnswerStreamOptions,
} from "../src/forward/answer_stream.ts";
import { streamErrorEnding } from "../src/forward/stream_error.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const NATIVE = [
  '{"model":"m","created_at":"t","response":"Hé","done":false}\n',
  '{"model":"m","created_at":"t","response":"llo","done":false}\n',
  '{"model":"m","created_at":"t","response":" 🌍","done":false}\n',
  '{"model":"m","created_at":"t","response":"","done":true,' +
  '"prompt_eval_count":7,"eval_count":3}\n',
].join("");

// Ollama's /v1/completions with include_usage: zero usage on every chunk,
// then a usage chunk before [DONE].
function completions(chunks: number, includeUsage: boolean): string {
  const zero = includeUsage
    ? ',"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}'
    : "";
  const head = '{"id":"cmpl-7","object":"text_completion","created":1';
  const tail = ',"model":"m","system_fingerprint":"fp_ollama"';
  const chunk = (text: string, finish: string) =>
    `data: ${head},"choices":[{"text":${
      JSON.stringify(text)
    },"index":0,"finish_reason":${finish}}]${tail}${zero}}\n\n`;
  let out = "";
  for (let i = 0; i < chunks; i++) out += chunk(`w${i} ü`, "null");
  out += chunk("", '"stop"');
  if (includeUsage) {
    out += `data: ${head},"choices":[]${tail},"usage":{"prompt_tokens":3,` +
      `"completion_tokens":${chunks},"total_tokens":${3 + chunks}}}\n\n`;
  }
  return out + "data: [DONE]\n\n";
}

/** Every single cut point, every byte apart, and a few fixed sizes. */
function* splits(bytes: Uint8Array): Generator<Uint8Array[]> {
  for (const size of [1, 2, 3, 7, 64, bytes.length]) {
    const chunks: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += size) {
      chunks.push(bytes.slice(i, i + size));
    }
    yield chunks;
  }
  for (let i = 1; i < bytes.length; i += 5) {
    yield [bytes.slice(0, i), bytes.slice(i)];
  }
}

async function run(
  upstream: ReadableStream<Uint8Array>,
  options: Omit<AnswerStreamOptions, "onEnd">,
): Promise<{ text: string; ends: AnswerEnd[] }> {
  const ends: AnswerEnd[] = [];
  const text = await new Response(
    answerStream(upstream, { ...options, onEnd: (end) => ends.push(end) }),
  ).text();
  return { text, ends };
}

Deno.test("no counting: the same bytes, counted, one end", async () => {
  const bytes = encoder.encode(NATIVE);
  for (const chunks of splits(bytes)) {
    const { text, ends } = await run(ReadableStream.from(chunks), {});
    assert.equal(text, NATIVE);
    assert.deepEqual(ends, [
      { end: "complete", bytes: bytes.length, tokens: undefined },
    ]);
  }
});

Deno.test("a byte stream is read through the reused buffer", async () => {
  const bytes = encoder.encode(NATIVE.repeat(50));
  const { text, ends } = await run(new Response(bytes).body!, {
    count: { format: "ndjson", dialect: "native" },
    bufferBytes: 100,
  });
  assert.equal(text, NATIVE.repeat(50));
  assert.equal(ends.length, 1);
  assert.equal(ends[0].bytes, bytes.length);
  assert.equal(ends[0].tokens?.contentChunks, 150);
});

Deno.test("counting: same bytes, counts read, any split", async () => {
  const bytes = encoder.encode(NATIVE);
  for (const chunks of splits(bytes)) {
    const { text, ends } = await run(ReadableStream.from(chunks), {
      count: { format: "ndjson", dialect: "native" },
    });
    assert.equal(text, NATIVE);
    assert.deepEqual(ends, [{
      end: "complete",
      bytes: bytes.length,
      tokens: { contentChunks: 3, prompt: 7, generated: 3, complete: true },
    }]);
  }
});

Deno.test("strip and cap together: usage gone, cut at the cap, any split", async () => {
  const bytes = encoder.encode(completions(6, true));
  let expected: string | undefined;
  for (const chunks of splits(bytes)) {
    let cuts = 0;
    const { text, ends } = await run(ReadableStream.from(chunks), {
      count: { format: "sse", dialect: "openai_completions" },
      stripUsage: true,
      cap: { limit: 2, onCut: () => cuts++ },
    });
    expected ??= text;
    assert.equal(text, expected, `split ${chunks.map((c) => c.length)}`);
    assert.equal(cuts, 1);
    assert.ok(!text.includes('"usage"'), text);
    assert.equal(text.match(/"finish_reason":null/g)?.length, 2);
    assert.ok(text.endsWith('"finish_reason":"length"}]}\n\ndata: [DONE]\n\n'));
    assert.equal(ends.length, 1);
    assert.equal(ends[0].end, "complete");
    assert.equal(ends[0].bytes, encoder.encode(text).length);
  }
  // Without the cap, the stripped stream is what Ollama sends unasked.
  for (const chunks of splits(bytes)) {
    const { text } = await run(ReadableStream.from(chunks), {
      count: { format: "sse", dialect: "openai_completions" },
      stripUsage: true,
    });
    assert.equal(text, completions(6, false));
  }
});

Deno.test("a cap the upstream honours changes nothing", async () => {
  const text = completions(2, false);
  for (const chunks of splits(encoder.encode(text))) {
    let cuts = 0;
    const out = await run(ReadableStream.from(chunks), {
      count: { format: "sse", dialect: "openai_completions" },
      cap: { limit: 2, onCut: () => cuts++ },
    });
    assert.equal(out.text, text);
    assert.equal(cuts, 0);
  }
});

Deno.test("client hang-up: one client_closed end, upstream cancelled", async () => {
  let cancelled: unknown;
  const upstream = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(encoder.encode(NATIVE.split("\n")[0] + "\n"));
    },
    cancel(reason) {
      cancelled = reason;
    },
  });
  const ends: AnswerEnd[] = [];
  const reader = answerStream(upstream, {
    count: { format: "ndjson", dialect: "native" },
    onEnd: (end) => ends.push(end),
  }).getReader();
  await reader.read();
  await reader.cancel("gone");
  assert.equal(cancelled, "gone");
  assert.equal(ends.length, 1);
  assert.equal(ends[0].end, "client_closed");
  assert.equal(ends[0].tokens?.contentChunks, 1);
});

Deno.test("upstream breaks off: the dialect's error ending, one end", async () => {
  const cases = [
    { pattern: "/api/chat", dialect: "native", format: "ndjson", sent: '{"a"' },
    {
      pattern: "/v1/chat/completions",
      dialect: "openai",
      format: "sse",
      sent: "data: {}\n",
    },
    {
      pattern: "/v1/messages",
      dialect: "anthropic",
      format: "sse",
      sent: "event: ping\ndata: {}\n\n",
    },
    { pattern: "/v1/responses", dialect: "openai", format: "sse", sent: "" },
  ] as const;
  for (const c of cases) {
    const upstream = new ReadableStream<Uint8Array>({
      start(controller) {
        if (c.sent) controller.enqueue(encoder.encode(c.sent));
      },
      pull(controller) {
        controller.error(new Error("connection reset"));
      },
    });
    const options = {
      dialect: c.dialect,
      format: c.format,
      routePattern: c.pattern,
      message: "broke off",
    };
    const { text, ends } = await run(upstream, {
      errorEnding: (tail) => streamErrorEnding(tail, options),
    });
    const sent = encoder.encode(c.sent);
    const ending = decoder.decode(
      streamErrorEnding(sent.subarray(Math.max(0, sent.length - 2)), options),
    );
    assert.equal(text, c.sent + ending, c.pattern);
    assert.ok(text.includes("broke off"));
    assert.deepEqual(ends, [
      { end: "upstream_error", bytes: sent.length, tokens: undefined },
    ]);
  }
});

Deno.test("upstream breaks off without an ending: the body errors", async () => {
  const upstream = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.error(new Error("connection reset"));
    },
  });
  const ends: AnswerEnd[] = [];
  const body = answerStream(upstream, { onEnd: (end) => ends.push(end) });
  await assert.rejects(new Response(body).text(), /connection reset/);
  assert.deepEqual(ends, [{
    end: "upstream_error",
    bytes: 0,
    tokens: undefined,
  }]);
});
