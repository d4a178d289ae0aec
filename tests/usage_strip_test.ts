/**
 * Asking Ollama for stream usage on the client's behalf, and taking it back
 * out of the stream: the request rewrite and the stream filter, on the
 * exact bytes Ollama's OpenAI middleware writes.
 */

import assert from "node:assert/strict";
import {
  type JsonNode,
  parseJsonAsGo,
  serializeJson,
} from "../src/request/go_json.ts";
import { FieldTypeError } from "../src/request/go_fields.ts";
import { requestStreamUsage } from "../src/forward/usage_request.ts";
import { removeTopLevelMember } from "../src/forward/usage_strip.ts";
import { answerStream } from "../src/forward/answer_stream.ts";

function usageStrip(
  upstream: ReadableStream<Uint8Array>,
): ReadableStream<Uint8Array> {
  return answerStream(upstream, {
    count: { format: "sse", dialect: "openai_chat" },
    stripUsage: true,
    onEnd: () => {},
  });
}

function node(text: string): JsonNode {
  return parseJsonAsGo(new TextEncoder().encode(text));
}

function rewrite(text: string, route = "/v1/chat/completions"): string {
  const result = requestStreamUsage(node(text), { route, stream: true });
  return result.kind === "rewritten" ? serializeJson(result.body) : "";
}

Deno.test("usage request: added to streamed chat and completions", () => {
  assert.equal(
    rewrite('{"model":"m","stream":true}'),
    '{"model":"m","stream":true,"stream_options":{"include_usage":true}}',
  );
  assert.equal(
    rewrite('{"model":"m","stream_options":null}', "/v1/completions"),
    '{"model":"m","stream_options":{"include_usage":true}}',
  );
  // Other stream options are kept; every key Go would read is replaced by
  // one canonical key.
  assert.equal(
    rewrite('{"Stream_Options":{"include_usage":false,"x":1}}'),
    '{"stream_options":{"x":1,"include_usage":true}}',
  );
  assert.equal(
    rewrite('{"stream_options":{"INCLUDE_USAGE":null}}'),
    '{"stream_options":{"include_usage":true}}',
  );
});

Deno.test("usage request: unchanged when asked, not streamed, other routes", () => {
  const asked = [
    '{"stream_options":{"include_usage":true}}',
    '{"stream_options":{"Include_Usage":true}}',
  ];
  for (const text of asked) assert.equal(rewrite(text), "", text);
  const body = node('{"model":"m"}');
  for (
    const [route, stream] of [
      ["/v1/chat/completions", false],
      ["/v1/messages", true],
      ["/v1/responses", true],
      ["/api/chat", true],
    ] as const
  ) {
    assert.deepEqual(requestStreamUsage(body, { route, stream }), {
      kind: "unchanged",
    });
  }
});

Deno.test("usage request: wrong types are refused as Ollama would", () => {
  for (
    const text of [
      '{"stream_options":"yes"}',
      '{"stream_options":{"include_usage":"yes"}}',
    ]
  ) {
    assert.throws(() => rewrite(text), FieldTypeError, text);
  }
});

Deno.test("removeTopLevelMember cuts one member and its comma", () => {
  const cases: Array<[string, string | undefined]> = [
    ['{"a":1,"usage":{"x":[1,"}"]}}', '{"a":1}'],
    ['{"usage":{"x":1},"a":"b"}', '{"a":"b"}'],
    ['{ "a" : 1 , "usage" : null , "b" : 2 }', '{ "a" : 1 , "b" : 2 }'],
    ['{"a":{"usage":1}}', undefined],
    ['{"a":"\\"usage\\":1"}', undefined],
    ["[1]", undefined],
  ];
  for (const [input, expected] of cases) {
    assert.equal(removeTopLevelMember(input, "usage"), expected, input);
  }
});

// What Ollama's CompleteWriter writes for /v1/completions with
// include_usage: zero usage on every chunk, then a usage chunk.
function ollamaCompletions(includeUsage: boolean): string {
  const zero = includeUsage
    ? ',"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}'
    : "";
  const head = '{"id":"cmpl-7","object":"text_completion","created":1';
  const tail = ',"model":"m","system_fingerprint":"fp_ollama"';
  const chunk = (text: string, finish: string) =>
    `data: ${head},"choices":[{"text":${
      JSON.stringify(text)
    },"index":0,"finish_reason":${finish}}]${tail}${zero}}\n\n`;
  let out = chunk("Hi", "null") + chunk(' \\"usage\\"', "null") +
    chunk("", '"stop"');
  if (includeUsage) {
    out += `data: ${head},"choices":[]${tail},"usage":{"prompt_tokens":3,` +
      `"completion_tokens":2,"total_tokens":5}}\n\n`;
  }
  return out + "data: [DONE]\n\n";
}

// What Ollama's ChatWriter writes for /v1/chat/completions.
function ollamaChat(includeUsage: boolean): string {
  const base = '{"id":"chatcmpl-1","object":"chat.completion.chunk",' +
    '"created":1,"model":"m","system_fingerprint":"fp_ollama"';
  const chunk = (content: string, finish: string) =>
    `data: ${base},"choices":[{"index":0,"delta":{"role":"assistant",` +
    `"content":${JSON.stringify(content)}},"finish_reason":${finish}}]}\n\n`;
  let out = chunk("Hi", "null") + chunk("", '"stop"');
  if (includeUsage) {
    out += `data: ${base},"choices":[],"usage":{"prompt_tokens":3,` +
      `"completion_tokens":1,"total_tokens":4}}\n\r\n`;
  }
  return out + "data: [DONE]\n\n";
}

async function strip(text: string, split: number): Promise<string> {
  const bytes = new TextEncoder().encode(text);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += split) {
    chunks.push(bytes.slice(i, i + split));
  }
  const stream = usageStrip(ReadableStream.from(chunks));
  return await new Response(stream).text();
}

Deno.test("usage strip: the client gets what Ollama sends without usage", async () => {
  for (const split of [1, 3, 7, 64, 100_000]) {
    assert.equal(
      await strip(ollamaCompletions(true), split),
      ollamaCompletions(false),
      `completions, split ${split}`,
    );
    assert.equal(
      await strip(ollamaChat(true), split),
      ollamaChat(false),
      `chat, split ${split}`,
    );
  }
});

Deno.test("usage strip: events without usage pass as the same bytes", async () => {
  const text = ollamaChat(false) + ": comment\n\ndata: {partial";
  assert.equal(await strip(text, 5), text);

  const whole = new TextEncoder().encode(ollamaChat(false));
  const out: Uint8Array[] = [];
  const stream = usageStrip(ReadableStream.from([whole]));
  for await (const chunk of stream) out.push(chunk);
  assert.equal(out.length, 3);
  assert.equal(out[0].buffer, whole.buffer); // views of the chunk received
});
