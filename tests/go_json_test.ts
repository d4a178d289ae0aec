import assert from "node:assert/strict";
import {
  type JsonNode,
  JsonSyntaxError,
  parseJsonAsGo,
  serializeJson,
} from "../src/request/go_json.ts";

const encode = (text: string) => new TextEncoder().encode(text);
const parse = (text: string) => parseJsonAsGo(encode(text));

function assertSyntaxError(bytes: Uint8Array | string, includes: string) {
  const input = typeof bytes === "string" ? encode(bytes) : bytes;
  assert.throws(
    () => parseJsonAsGo(input),
    (error) =>
      error instanceof JsonSyntaxError && error.message.includes(includes),
    `expected a JsonSyntaxError mentioning ${includes}`,
  );
}

Deno.test("parseJsonAsGo keeps duplicate and case-variant keys in order", () => {
  const node = parse('{"model":"a","Model":"b","model":"c"}');
  assert.deepEqual(node, {
    kind: "object",
    entries: [
      ["model", { kind: "string", value: "a" }],
      ["Model", { kind: "string", value: "b" }],
      ["model", { kind: "string", value: "c" }],
    ],
  });
});

Deno.test("parseJsonAsGo resolves escapes in keys and values", () => {
  const node = parse('{"\\u006dodel":"a\\n\\"\\u00e9\\ud83d\\ude00\\/"}');
  assert.deepEqual(node, {
    kind: "object",
    entries: [["model", { kind: "string", value: 'a\n"é😀/' }]],
  });
});

Deno.test("parseJsonAsGo reads every value kind", () => {
  const node = parse(' [true , false,null, -0.5e+3, 0, "x", {}, []] \n');
  assert.deepEqual(node, {
    kind: "array",
    items: [
      { kind: "bool", value: true },
      { kind: "bool", value: false },
      { kind: "null" },
      { kind: "number", raw: "-0.5e+3", value: -500 },
      { kind: "number", raw: "0", value: 0 },
      { kind: "string", value: "x" },
      { kind: "object", entries: [] },
      { kind: "array", items: [] },
    ],
  });
});

Deno.test("parseJsonAsGo keeps huge numbers as their source text", () => {
  const raw = "123456789012345678901234567890e400";
  const node = parse(`{"n":${raw}}`);
  assert.deepEqual(node.kind === "object" && node.entries[0][1], {
    kind: "number",
    raw,
    value: Infinity,
  });
  assert.deepEqual(serializeJson(node), `{"n":${raw}}`);
});

Deno.test("parseJsonAsGo decodes non-ASCII text in long and short strings", () => {
  const long = "héllo wörld ".repeat(1000);
  const node = parse(JSON.stringify({ a: long, b: "é", c: "ab" }));
  assert.deepEqual(
    serializeJson(node),
    JSON.stringify({ a: long, b: "é", c: "ab" }),
  );
});

Deno.test("parseJsonAsGo refuses trailing data and second documents", () => {
  assertSyntaxError('{"a":1} x', "after the top-level value at byte 8");
  assertSyntaxError("{}{}", "after the top-level value at byte 2");
  assertSyntaxError("1 2", "after the top-level value");
});

Deno.test("parseJsonAsGo refuses a leading byte-order mark", () => {
  const bytes = new Uint8Array([0xef, 0xbb, 0xbf, ...encode("{}")]);
  assertSyntaxError(bytes, "byte-order mark");
});

Deno.test("parseJsonAsGo refuses invalid UTF-8", () => {
  // A lone continuation byte, an overlong '/', and an encoded surrogate
  // (reported at its second byte, the first that cannot be valid).
  const cases: Array<[number[], number]> = [
    [[0x80], 2],
    [[0xc0, 0xaf], 2],
    [[0xed, 0xa0, 0x80], 3],
  ];
  for (const [bad, offset] of cases) {
    const bytes = new Uint8Array([0x22, 0x61, ...bad, 0x22]);
    assertSyntaxError(
      bytes,
      `invalid UTF-8 in string literal at byte ${offset}`,
    );
  }
  // Also after an escape (slow path) and in a long string.
  const escaped = new Uint8Array([...encode('"\\n'), 0xff, 0x22]);
  assertSyntaxError(escaped, "invalid UTF-8");
  const long = new Uint8Array([
    0x22,
    ...encode("a".repeat(100)),
    0xfe,
    0x22,
  ]);
  assertSyntaxError(long, "invalid UTF-8 in string literal at byte 101");
  // Outside strings, any byte >= 0x80 is a syntax error too.
  assertSyntaxError(new Uint8Array([0x5b, 0xc3, 0xa9, 0x5d]), "byte 0xc3");
});

Deno.test("parseJsonAsGo refuses lone surrogate escapes", () => {
  assertSyntaxError('"\\ud800"', "lone high surrogate");
  assertSyntaxError('"\\ud800x"', "lone high surrogate");
  assertSyntaxError('"\\ud800\\u0041"', "lone high surrogate");
  assertSyntaxError('"\\udc00"', "lone low surrogate");
  assertSyntaxError('{"\\ud800":1}', "lone high surrogate");
});

Deno.test("parseJsonAsGo enforces the nesting limit", () => {
  const nested = (depth: number) => "[".repeat(depth) + "]".repeat(depth);
  assert.deepEqual(parse(nested(64)).kind, "array");
  assertSyntaxError(nested(65), "nesting deeper than 64");
  assertSyntaxError('{"a":'.repeat(65) + "1" + "}".repeat(65), "nesting");
  const two = parseJsonAsGo(encode(nested(2)), { maxDepth: 2 });
  assert.deepEqual(two.kind, "array");
  assert.throws(
    () => parseJsonAsGo(encode(nested(3)), { maxDepth: 2 }),
    JsonSyntaxError,
  );
  // Deep enough to overflow a naive recursive parser: refused, not crashed.
  assertSyntaxError(nested(100_000), "nesting");
});

Deno.test("parseJsonAsGo refuses malformed documents", () => {
  for (
    const bad of [
      "",
      " ",
      "{",
      '{"a"}',
      '{"a":}',
      '{"a":1,}',
      "[1,]",
      "[1 2]",
      "{a:1}",
      "{'a':1}",
      "01",
      "1.",
      ".5",
      "-",
      "1e",
      "+1",
      "NaN",
      "tru",
      "nul",
      '"abc',
      '"\\x"',
      '"\\u12g4"',
      '"tab\there"',
      '"\n"',
    ]
  ) {
    assert.throws(() => parse(bad), JsonSyntaxError, JSON.stringify(bad));
  }
});

Deno.test("serializeJson round-trips a parsed document", () => {
  const text =
    '{"model":"m","Model":"n","options":{"num_ctx":4096.0,"x":[1,2e3,null,true]},"s":"\\u2028\\u0000é😀\\\\"}';
  const node = parse(text);
  const again = serializeJson(node);
  assert.deepEqual(parse(again), node);
  assert.deepEqual(
    again,
    '{"model":"m","Model":"n","options":{"num_ctx":4096.0,"x":[1,2e3,null,true]},"s":"\u2028\\u0000é😀\\\\"}',
  );
});

Deno.test("serializeJson writes constructed nodes", () => {
  const node: JsonNode = {
    kind: "object",
    entries: [['a"b', { kind: "array", items: [{ kind: "null" }] }]],
  };
  assert.deepEqual(serializeJson(node), '{"a\\"b":[null]}');
});
