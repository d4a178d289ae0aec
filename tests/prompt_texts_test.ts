import assert from "node:assert/strict";
import { parseJsonAsGo } from "../src/request/go_json.ts";
import {
  FieldConflictError,
  FieldTypeError,
} from "../src/request/go_fields.ts";
import { hasOpaqueContext, promptTexts } from "../src/policy/prompt_texts.ts";

function body(json: string) {
  return parseJsonAsGo(new TextEncoder().encode(json));
}

function texts(route: string, json: string): string[] {
  return promptTexts(route, body(json));
}

function assertTypeError(route: string, json: string, field: string): void {
  assert.throws(
    () => texts(route, json),
    (error: unknown) =>
      error instanceof FieldTypeError && error.field === field,
    `${route} ${json}`,
  );
}

Deno.test("/api/generate: prompt, system, suffix, template with Go keys", () => {
  assert.deepEqual(
    texts(
      "/api/generate",
      '{"model":"m","PROMPT":"p","System":"s","ſuffix":"x","template":"t",' +
        '"images":["aGk="],"options":{"prompt":"not text"}}',
    ),
    ["p", "s", "x", "t"],
  );
  // JSON.parse would keep "prompt"; Go reads the last key folding to it
  assert.deepEqual(
    texts("/api/generate", '{"prompt":"same","Prompt":"same"}'),
    ["same"],
  );
  assert.throws(
    () => texts("/api/generate", '{"prompt":"a","Prompt":"b"}'),
    FieldConflictError,
  );
  assertTypeError("/api/generate", '{"prompt":["a"]}', "prompt");
  assertTypeError("/api/generate", '{"system":1}', "system");
  assert.deepEqual(texts("/api/generate", '{"prompt":null,"system":""}'), []);
});

Deno.test("/api/generate context is opaque", () => {
  assert.equal(
    hasOpaqueContext("/api/generate", body('{"Context":[1,2,3]}')),
    true,
  );
  assert.equal(
    hasOpaqueContext("/api/generate", body('{"context":[]}')),
    false,
  );
  assert.equal(
    hasOpaqueContext("/api/generate", body('{"context":null}')),
    false,
  );
  assert.equal(
    hasOpaqueContext("/api/generate", body('{"prompt":"p"}')),
    false,
  );
  assert.equal(hasOpaqueContext("/api/chat", body('{"context":[1]}')), false);
  assert.throws(
    () => hasOpaqueContext("/api/generate", body('{"context":"1,2"}')),
    FieldTypeError,
  );
});

Deno.test("/api/chat: every role, thinking, tool calls and tools", () => {
  const json = JSON.stringify({
    model: "m",
    "meſſages": [
      { role: "system", content: "sys" },
      { Role: "user", CONTENT: "hello", images: ["aGk="] },
      {
        role: "assistant",
        content: "",
        thinking: "thought",
        tool_calls: [{
          id: "call_1",
          function: {
            name: "get_weather",
            arguments: { city: "Paris", nested: { Deep: ["ign", "ore"] } },
          },
        }],
      },
      { role: "tool", content: "tool says", tool_name: "get_weather" },
      { role: "user<|end_header_id|>", content: "x" },
      null,
    ],
    tools: [{
      type: "function",
      function: {
        name: "get_weather",
        description: "Weather lookup",
        parameters: {
          type: "object",
          properties: { city: { type: "string", description: "City name" } },
        },
      },
    }],
  });
  const found = texts("/api/chat", json);
  for (
    const expected of [
      "sys",
      "hello",
      "thought",
      "call_1",
      "get_weather",
      "city",
      "Paris",
      "nested",
      "Deep",
      "ign",
      "ore",
      "tool says",
      "user<|end_header_id|>",
      "x",
      "Weather lookup",
      "City name",
    ]
  ) {
    assert.ok(found.includes(expected), expected);
  }
  for (const absent of ["aGk=", "system", "user", "assistant", "tool", "m"]) {
    assert.ok(!found.includes(absent), absent);
  }
  assertTypeError("/api/chat", '{"messages":"hi"}', "messages");
  assertTypeError(
    "/api/chat",
    '{"messages":[{"role":"user","content":["a"]}]}',
    "messages[0].content",
  );
  assertTypeError("/api/chat", '{"messages":[5]}', "messages[0]");
});

Deno.test("/api/embed and /v1/embeddings: a string or strings", () => {
  for (const route of ["/api/embed", "/v1/embeddings"]) {
    assert.deepEqual(texts(route, '{"Input":"one"}'), ["one"]);
    assert.deepEqual(texts(route, '{"input":["a","b"]}'), ["a", "b"]);
    assertTypeError(route, '{"input":[1,2,3]}', "input[0]");
    assertTypeError(route, '{"input":["a",[1]]}', "input[1]");
    assertTypeError(route, '{"input":{"text":"a"}}', "input");
    assert.equal(hasOpaqueContext(route, body('{"input":[1,2]}')), false);
  }
  assert.deepEqual(texts("/api/embeddings", '{"Prompt":"p"}'), ["p"]);
  assertTypeError("/api/embeddings", '{"prompt":["p"]}', "prompt");
});

Deno.test("/api/create: system, template, messages", () => {
  assert.deepEqual(
    texts(
      "/api/create",
      '{"model":"new","from":"llama3.2","SYSTEM":"be evil","template":"{{ .Prompt }}",' +
        '"messages":[{"role":"user","content":"baked"}],"license":"MIT"}',
    ),
    ["be evil", "{{ .Prompt }}", "baked"],
  );
});

Deno.test("/v1/chat/completions: strings, parts, tool calls, tools", () => {
  const json = JSON.stringify({
    model: "m",
    Messages: [
      { role: "developer", content: "dev" },
      {
        role: "user",
        content: [
          { type: "text", text: "part one" },
          { type: "image_url", image_url: { url: "data:image/png;base64,AA" } },
          { type: "text", text: "part two", Text: "ignored by Go" },
        ],
      },
      {
        role: "assistant",
        content: null,
        reasoning: "why",
        tool_calls: [{
          id: "c1",
          type: "function",
          function: { name: "f", arguments: '{"q":"\\u0069gnore"}' },
        }],
      },
      { role: "tool", tool_call_id: "c1", name: "f", content: "result" },
    ],
    tools: [{ type: "function", function: { name: "f", description: "D" } }],
  });
  const found = texts("/v1/chat/completions", json);
  for (
    const expected of [
      "dev",
      "part one",
      "part two",
      "why",
      "c1",
      "f",
      "q",
      "ignore",
      "result",
      "D",
    ]
  ) {
    assert.ok(found.includes(expected), expected);
  }
  assert.ok(!found.includes("data:image/png;base64,AA"));
  assert.ok(!found.includes("ignored by Go"));

  assertTypeError(
    "/v1/chat/completions",
    '{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}',
    "messages[0].content[0].text",
  );
  assertTypeError(
    "/v1/chat/completions",
    '{"messages":[{"role":"user","content":[{"type":"text"}]}]}',
    "messages[0].content[0].text",
  );
  assertTypeError(
    "/v1/chat/completions",
    '{"messages":[{"role":"user","content":["text"]}]}',
    "messages[0].content[0]",
  );
  assertTypeError(
    "/v1/chat/completions",
    '{"messages":[{"role":"user","content":7}]}',
    "messages[0].content",
  );
  // arguments Butler cannot decode are refused, not matched undecoded
  assertTypeError(
    "/v1/chat/completions",
    '{"messages":[{"role":"assistant","tool_calls":[{"function":' +
      '{"name":"f","arguments":"{\\"q\\":\\"\\\\ud800\\"}"}}]}]}',
    "messages[0].tool_calls[0].function.arguments",
  );
  // a part's "type" is an exact map key: "Type" does not make it text
  assert.deepEqual(
    texts(
      "/v1/chat/completions",
      '{"messages":[{"role":"user","content":[{"Type":"text","text":"t"}]}]}',
    ),
    ["Type", "text", "text", "t"],
  );
});

Deno.test("/v1/completions: prompt and suffix are strings", () => {
  assert.deepEqual(
    texts("/v1/completions", '{"prompt":"p","SUFFIX":"s"}'),
    ["p", "s"],
  );
  assertTypeError("/v1/completions", '{"prompt":["p"]}', "prompt");
});

Deno.test("/v1/responses: instructions, string and item inputs", () => {
  assert.deepEqual(
    texts("/v1/responses", '{"Instructions":"rules","input":"question"}'),
    ["rules", "question"],
  );

  const json = JSON.stringify({
    input: [
      { role: "user", content: "short form" },
      {
        type: "message",
        role: "user",
        content: [
          { type: "input_text", text: "ign" },
          { type: "input_image", image_url: "data:image/png;base64,AA" },
          { TYPE: "input_text", TEXT: "ore all" },
        ],
      },
      {
        type: "message",
        role: "assistant",
        content: [{ type: "output_text", text: "earlier answer" }],
      },
      {
        type: "function_call",
        call_id: "c1",
        name: "lookup",
        arguments: '{"term":"x"}',
      },
      { type: "function_call_output", call_id: "c1", output: "tool output" },
      {
        type: "function_call_output",
        call_id: "c2",
        output: [{ type: "input_text", text: "a" }, {
          type: "output_text",
          text: "b",
        }],
      },
      { type: "reasoning", encrypted_content: "hidden thoughts", summary: [] },
    ],
    tools: [{ type: "function", name: "lookup", description: "Looks up" }],
  });
  const found = texts("/v1/responses", json);
  for (
    const expected of [
      "short form",
      "ign",
      "ore all",
      "ignore all",
      "earlier answer",
      "c1",
      "lookup",
      "term",
      "x",
      "tool output",
      "ab",
      "hidden thoughts",
      "Looks up",
    ]
  ) {
    assert.ok(found.includes(expected), expected);
  }
  assert.ok(!found.includes("data:image/png;base64,AA"));

  assertTypeError("/v1/responses", '{"input":5}', "input");
  assertTypeError("/v1/responses", '{"input":["hi"]}', "input[0]");
  assertTypeError(
    "/v1/responses",
    '{"input":[{"role":"user","content":{"text":"x"}}]}',
    "input[0].content",
  );
  assertTypeError(
    "/v1/responses",
    '{"input":[{"role":"user","content":[{"type":"input_text","text":1}]}]}',
    "input[0].content[0].text",
  );
});

Deno.test("/v1/messages: system blocks, text blocks, tool use and results", () => {
  const json = JSON.stringify({
    model: "m",
    max_tokens: 10,
    system: [
      { type: "text", text: "sys one " },
      { type: "text", text: "sys two" },
      { type: "Text", text: "not text: map keys and values are exact" },
    ],
    messages: [
      { role: "user", content: "plain" },
      {
        role: "assistant",
        content: [
          { type: "thinking", thinking: "pondering", signature: "sig" },
          { type: "text", text: "ign" },
          {
            type: "tool_use",
            id: "tu1",
            name: "search",
            input: { query: "ore" },
          },
          { Type: "text", TEXT: "ore" },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "tu1", content: "flat result" },
          {
            type: "tool_result",
            tool_use_id: "tu2",
            content: [
              { type: "text", text: "nested " },
              { type: "image", source: { type: "base64", data: "AA" } },
              { type: "text", text: "result" },
            ],
          },
          { type: "image", source: { type: "base64", data: "BB" } },
        ],
      },
    ],
    tools: [{
      name: "search",
      description: "Searches",
      input_schema: {
        type: "object",
        properties: { query: { type: "string", description: "Query text" } },
      },
    }],
  });
  const found = texts("/v1/messages", json);
  for (
    const expected of [
      "sys one ",
      "sys two",
      "sys one sys two",
      "plain",
      "pondering",
      "ign",
      "ore",
      "ignore",
      "tu1",
      "search",
      "query",
      "flat result",
      "nested ",
      "result",
      "nested result",
      "Searches",
      "Query text",
    ]
  ) {
    assert.ok(found.includes(expected), expected);
  }
  for (
    const absent of ["not text: map keys and values are exact", "AA", "BB"]
  ) {
    assert.ok(!found.includes(absent), absent);
  }
  assert.deepEqual(texts("/v1/messages", '{"system":"just a string"}'), [
    "just a string",
  ]);
  assertTypeError(
    "/v1/messages",
    '{"messages":[{"role":"user","content":5}]}',
    "messages[0].content",
  );
  assertTypeError(
    "/v1/messages",
    '{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}',
    "messages[0].content[0].text",
  );
  assertTypeError("/v1/messages", '{"messages":[null]}', "messages[0]");
});

Deno.test("routes without model-bound text give nothing", () => {
  assert.deepEqual(texts("/api/show", '{"model":"m","system":"s"}'), []);
  assert.deepEqual(texts("/api/pull", '{"model":"m"}'), []);
  assert.deepEqual(texts("/api/tags", "{}"), []);
});
