import assert from "node:assert/strict";
import { applyCaps, type CapLimits } from "../src/policy/caps.ts";
import { parseJsonAsGo, serializeJson } from "../src/request/go_json.ts";
import { FieldConflictError } from "../src/request/go_fields.ts";
import type { CapField } from "../src/routes/table.ts";

type Expected =
  | "unchanged"
  | { body: string; changes?: string[] }
  | { refused: string; field: string; value?: string };

interface Case {
  name: string;
  capField: CapField;
  limits: CapLimits;
  body: string;
  expected: Expected;
}

const refuse512: CapLimits = { maxPredict: 512, capMode: "refuse" };
const clamp512: CapLimits = { maxPredict: 512, capMode: "clamp" };
const ctxRefuse: CapLimits = { maxCtx: 4096, capMode: "refuse" };
const ctxClamp: CapLimits = { maxCtx: 4096, capMode: "clamp" };

const NATIVE = "options.num_predict";

const CASES: Case[] = [
  // Native num_predict.
  {
    name: "native: under the cap is forwarded as is",
    capField: NATIVE,
    limits: refuse512,
    body: '{"model":"m","options":{"num_predict":100}}',
    expected: "unchanged",
  },
  {
    name: "native: exactly the cap is forwarded as is",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"num_predict":512}}',
    expected: "unchanged",
  },
  {
    name: "native: a fraction truncates (512.9 is 512)",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"num_predict":512.9}}',
    expected: "unchanged",
  },
  {
    name: "native: 513.0 is over",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"num_predict":513.0}}',
    expected: {
      refused: "options.num_predict 513.0 exceeds this client's cap of 512",
      field: "options.num_predict",
      value: "513.0",
    },
  },
  {
    name: "native: over the cap is refused in refuse mode",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"num_predict":9000}}',
    expected: {
      refused: "options.num_predict 9000 exceeds this client's cap of 512",
      field: "options.num_predict",
      value: "9000",
    },
  },
  {
    name: "native: over the cap is lowered in clamp mode",
    capField: NATIVE,
    limits: clamp512,
    body: '{"model":"m","options":{"temperature":0.2,"num_predict":9000}}',
    expected: {
      body: '{"model":"m","options":{"temperature":0.2,"num_predict":512}}',
      changes: ["options.num_predict 9000 lowered to 512"],
    },
  },
  {
    name: "native: absent options get the cap",
    capField: NATIVE,
    limits: refuse512,
    body: '{"model":"m","prompt":"hi"}',
    expected: {
      body: '{"model":"m","prompt":"hi","options":{"num_predict":512}}',
      changes: ["options.num_predict set to 512 (was absent)"],
    },
  },
  {
    name: "native: null options get the cap",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":null,"model":"m"}',
    expected: { body: '{"model":"m","options":{"num_predict":512}}' },
  },
  {
    name: "native: absent num_predict gets the cap, other options kept",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"seed":1}}',
    expected: { body: '{"options":{"seed":1,"num_predict":512}}' },
  },
  {
    name: "native: null num_predict gets the cap",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"num_predict":null}}',
    expected: {
      body: '{"options":{"num_predict":512}}',
      changes: ["options.num_predict set to 512 (was null)"],
    },
  },
  {
    name: "native: -1 (no limit) gets the cap",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"num_predict":-1}}',
    expected: {
      body: '{"options":{"num_predict":512}}',
      changes: ["options.num_predict set to 512 (was -1)"],
    },
  },
  {
    name: "native: -2 (fill context) gets the cap",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"num_predict":-2}}',
    expected: { body: '{"options":{"num_predict":512}}' },
  },
  {
    name: "native: 0 (dropped before the runner: no limit) gets the cap",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"num_predict":0}}',
    expected: { body: '{"options":{"num_predict":512}}' },
  },
  {
    name: "native: 0.5 truncates to 0 and gets the cap",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"num_predict":0.5}}',
    expected: { body: '{"options":{"num_predict":512}}' },
  },
  {
    name: "native: a string is refused",
    capField: NATIVE,
    limits: clamp512,
    body: '{"options":{"num_predict":"9999"}}',
    expected: {
      refused: "options.num_predict must be a number, got a string",
      field: "options.num_predict",
    },
  },
  {
    name: "native: a boolean is refused",
    capField: NATIVE,
    limits: clamp512,
    body: '{"options":{"num_predict":true}}',
    expected: {
      refused: "options.num_predict must be a number, got the boolean true",
      field: "options.num_predict",
    },
  },
  {
    name: "native: an infinite number is refused",
    capField: NATIVE,
    limits: clamp512,
    body: '{"options":{"num_predict":1e400}}',
    expected: {
      refused: "options.num_predict 1e400 is outside the 64-bit",
      field: "options.num_predict",
    },
  },
  {
    name: "native: beyond int64 is refused",
    capField: NATIVE,
    limits: clamp512,
    body: '{"options":{"num_predict":1e19}}',
    expected: {
      refused: "outside the 64-bit integer range",
      field: "options.num_predict",
    },
  },
  {
    name: "native: a very negative number beyond int64 is refused",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"num_predict":-1e19}}',
    expected: { refused: "outside the 64-bit", field: "options.num_predict" },
  },
  {
    name: "native: options that is not an object is refused",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":[1]}',
    expected: {
      refused: "options must be an object, got an array",
      field: "options",
    },
  },
  {
    name: "native: options in another case is found (Options)",
    capField: NATIVE,
    limits: refuse512,
    body: '{"Options":{"num_predict":9000}}',
    expected: { refused: "9000 exceeds", field: "options.num_predict" },
  },
  {
    name: "native: options with a long s is found (optionſ)",
    capField: NATIVE,
    limits: refuse512,
    body: '{"optionſ":{"num_predict":9000}}',
    expected: { refused: "9000 exceeds", field: "options.num_predict" },
  },
  {
    name: "native: a case variant is merged into one canonical options key",
    capField: NATIVE,
    limits: clamp512,
    body:
      '{"OPTIONS":{"num_predict":9000},"model":"m","Options":{"num_predict":9000}}',
    expected: {
      body: '{"model":"m","options":{"num_predict":512}}',
      changes: ["options.num_predict 9000 lowered to 512"],
    },
  },
  {
    name:
      "native: an absent num_predict under Options is set in canonical spelling",
    capField: NATIVE,
    limits: refuse512,
    body: '{"Options":{"seed":3}}',
    expected: { body: '{"options":{"seed":3,"num_predict":512}}' },
  },
  {
    name: "native: option keys are exact: NUM_PREDICT is not num_predict",
    capField: NATIVE,
    limits: refuse512,
    body: '{"options":{"NUM_PREDICT":9000}}',
    expected: {
      body: '{"options":{"NUM_PREDICT":9000,"num_predict":512}}',
      changes: ["options.num_predict set to 512 (was absent)"],
    },
  },
  {
    name: "native: identical duplicate num_predict keys collapse to one",
    capField: NATIVE,
    limits: clamp512,
    body: '{"options":{"num_predict":9000,"seed":1,"num_predict":9000}}',
    expected: { body: '{"options":{"seed":1,"num_predict":512}}' },
  },
  {
    name: "native: no caps configured leaves everything",
    capField: NATIVE,
    limits: { capMode: "refuse" },
    body: '{"options":{"num_predict":"x"}}',
    expected: "unchanged",
  },
  // Native num_ctx.
  {
    name: "num_ctx: absent stays absent",
    capField: NATIVE,
    limits: ctxRefuse,
    body: '{"options":{"seed":1}}',
    expected: "unchanged",
  },
  {
    name: "num_ctx: absent options stay absent",
    capField: NATIVE,
    limits: ctxRefuse,
    body: '{"model":"m"}',
    expected: "unchanged",
  },
  {
    name: "num_ctx: null stays",
    capField: NATIVE,
    limits: ctxRefuse,
    body: '{"options":{"num_ctx":null}}',
    expected: "unchanged",
  },
  {
    name: "num_ctx: under the cap stays",
    capField: NATIVE,
    limits: ctxRefuse,
    body: '{"options":{"num_ctx":2048}}',
    expected: "unchanged",
  },
  {
    name: "num_ctx: 4096.9 is 4096, within the cap",
    capField: NATIVE,
    limits: ctxRefuse,
    body: '{"options":{"num_ctx":4096.9}}',
    expected: "unchanged",
  },
  {
    name: "num_ctx: over the cap is refused",
    capField: NATIVE,
    limits: ctxRefuse,
    body: '{"options":{"num_ctx":131072}}',
    expected: {
      refused: "options.num_ctx 131072 exceeds this client's cap of 4096",
      field: "options.num_ctx",
    },
  },
  {
    name: "num_ctx: over the cap is lowered in clamp mode",
    capField: NATIVE,
    limits: ctxClamp,
    body: '{"options":{"num_ctx":131072}}',
    expected: {
      body: '{"options":{"num_ctx":4096}}',
      changes: ["options.num_ctx 131072 lowered to 4096"],
    },
  },
  {
    name: "num_ctx: a string is refused",
    capField: NATIVE,
    limits: ctxClamp,
    body: '{"options":{"num_ctx":"131072"}}',
    expected: { refused: "must be a number", field: "options.num_ctx" },
  },
  {
    name: "both caps: one rewrite carries both changes",
    capField: NATIVE,
    limits: { maxPredict: 512, maxCtx: 4096, capMode: "clamp" },
    body: '{"options":{"num_ctx":8192}}',
    expected: {
      body: '{"options":{"num_predict":512,"num_ctx":4096}}',
      changes: [
        "options.num_predict set to 512 (was absent)",
        "options.num_ctx 8192 lowered to 4096",
      ],
    },
  },
  // OpenAI and Anthropic max_tokens, Responses max_output_tokens.
  {
    name: "max_tokens: under the cap is forwarded as is",
    capField: "max_tokens",
    limits: refuse512,
    body: '{"model":"m","max_tokens":100}',
    expected: "unchanged",
  },
  {
    name: "max_tokens: absent gets the cap",
    capField: "max_tokens",
    limits: refuse512,
    body: '{"model":"m"}',
    expected: {
      body: '{"model":"m","max_tokens":512}',
      changes: ["max_tokens set to 512 (was absent)"],
    },
  },
  {
    name: "max_tokens: null gets the cap",
    capField: "max_tokens",
    limits: refuse512,
    body: '{"max_tokens":null}',
    expected: { body: '{"max_tokens":512}' },
  },
  {
    name: "max_tokens: negative (no limit in Ollama) gets the cap",
    capField: "max_tokens",
    limits: refuse512,
    body: '{"max_tokens":-1}',
    expected: { body: '{"max_tokens":512}' },
  },
  {
    name: "max_tokens: 0 gets the cap",
    capField: "max_tokens",
    limits: refuse512,
    body: '{"max_tokens":0}',
    expected: { body: '{"max_tokens":512}' },
  },
  {
    name: "max_tokens: over the cap is refused",
    capField: "max_tokens",
    limits: refuse512,
    body: '{"max_tokens":9000}',
    expected: {
      refused: "max_tokens 9000 exceeds this client's cap of 512",
      field: "max_tokens",
      value: "9000",
    },
  },
  {
    name: "max_tokens: over the cap is lowered in clamp mode",
    capField: "max_tokens",
    limits: clamp512,
    body: '{"max_tokens":9000,"model":"m"}',
    expected: {
      body: '{"model":"m","max_tokens":512}',
      changes: ["max_tokens 9000 lowered to 512"],
    },
  },
  {
    name: "max_tokens: a fraction is a Go type error, refused",
    capField: "max_tokens",
    limits: clamp512,
    body: '{"max_tokens":100.0}',
    expected: {
      refused: "max_tokens must be an integer, got the number 100.0",
      field: "max_tokens",
    },
  },
  {
    name: "max_tokens: an exponent is a Go type error, refused",
    capField: "max_tokens",
    limits: clamp512,
    body: '{"max_tokens":1e2}',
    expected: { refused: "must be an integer", field: "max_tokens" },
  },
  {
    name: "max_tokens: a string is refused",
    capField: "max_tokens",
    limits: clamp512,
    body: '{"max_tokens":"100"}',
    expected: {
      refused: "max_tokens must be an integer, got a string",
      field: "max_tokens",
    },
  },
  {
    name: "max_tokens: beyond int64 is refused",
    capField: "max_tokens",
    limits: clamp512,
    body: '{"max_tokens":9223372036854775808}',
    expected: { refused: "outside the 64-bit", field: "max_tokens" },
  },
  {
    name:
      "max_tokens: a case variant is found and replaced by one canonical key",
    capField: "max_tokens",
    limits: clamp512,
    body: '{"Max_Tokens":9000,"model":"m"}',
    expected: { body: '{"model":"m","max_tokens":512}' },
  },
  {
    name: "max_tokens: a case variant over the cap is refused",
    capField: "max_tokens",
    limits: refuse512,
    body: '{"MAX_TOKENS":9000}',
    expected: { refused: "9000 exceeds", field: "max_tokens" },
  },
  {
    name: "max_tokens: max_completion_tokens is ignored by Ollama and left",
    capField: "max_tokens",
    limits: refuse512,
    body: '{"max_completion_tokens":99999}',
    expected: { body: '{"max_completion_tokens":99999,"max_tokens":512}' },
  },
  {
    name: "max_tokens: maxCtx does not apply on /v1",
    capField: "max_tokens",
    limits: { maxCtx: 10, capMode: "refuse" },
    body: '{"max_tokens":9000}',
    expected: "unchanged",
  },
  {
    name: "max_output_tokens: absent gets the cap",
    capField: "max_output_tokens",
    limits: refuse512,
    body: '{"model":"m","max_tokens":99999}',
    expected: {
      body: '{"model":"m","max_tokens":99999,"max_output_tokens":512}',
      changes: ["max_output_tokens set to 512 (was absent)"],
    },
  },
  {
    name: "max_output_tokens: over the cap is refused",
    capField: "max_output_tokens",
    limits: refuse512,
    body: '{"max_output_tokens":600}',
    expected: {
      refused: "max_output_tokens 600 exceeds this client's cap of 512",
      field: "max_output_tokens",
    },
  },
  {
    name: "max_output_tokens: within the cap is forwarded as is",
    capField: "max_output_tokens",
    limits: clamp512,
    body: '{"max_output_tokens":512}',
    expected: "unchanged",
  },
];

function parse(text: string) {
  return parseJsonAsGo(new TextEncoder().encode(text));
}

for (const c of CASES) {
  Deno.test(`caps: ${c.name}`, () => {
    const result = applyCaps(parse(c.body), {
      capField: c.capField,
      limits: c.limits,
    });
    const expected = c.expected;

    if (expected === "unchanged") {
      assert.deepEqual(result, { kind: "unchanged" });
    } else if ("refused" in expected) {
      assert.equal(result.kind, "refused", JSON.stringify(result));
      if (result.kind !== "refused") return;
      assert.ok(
        result.message.includes(expected.refused),
        `message: ${result.message}`,
      );
      assert.equal(result.field, expected.field);
      const cap = c.limits.maxPredict ?? c.limits.maxCtx;
      if (expected.field !== "options.num_ctx") assert.equal(result.cap, cap);
      if (expected.value) assert.equal(result.value, expected.value);
    } else {
      assert.equal(result.kind, "rewritten", JSON.stringify(result));
      if (result.kind !== "rewritten") return;
      assert.equal(serializeJson(result.body), expected.body);
      if (expected.changes) assert.deepEqual(result.changes, expected.changes);
    }
  });
}

Deno.test("caps: a rewritten body leaves exactly one key Go reads as the field", () => {
  const body = parse(
    '{"max_tokens":9000,"MAX_TOKENS":9000,"Max_tokens":9000,"model":"m"}',
  );
  const result = applyCaps(body, { capField: "max_tokens", limits: clamp512 });
  assert.equal(result.kind, "rewritten");
  if (result.kind !== "rewritten") return;
  assert.equal(serializeJson(result.body), '{"model":"m","max_tokens":512}');
});

Deno.test("caps: case variants that disagree throw FieldConflictError", () => {
  const split = [
    '{"options":{"num_predict":1},"Options":{"num_predict":9000}}',
    '{"options":{"num_predict":1},"Options":null}',
    '{"options":{"num_predict":1,"num_predict":9000}}',
    '{"max_tokens":1,"MAX_TOKENS":9000}',
  ];
  for (const text of split) {
    const capField = text.includes("max_tokens") ? "max_tokens" : NATIVE;
    assert.throws(
      () => applyCaps(parse(text), { capField, limits: refuse512 }),
      FieldConflictError,
      text,
    );
  }
});

Deno.test("caps: the input node is not modified by a rewrite", () => {
  const text = '{"options":{"num_predict":9000,"seed":1},"model":"m"}';
  const body = parse(text);
  applyCaps(body, {
    capField: NATIVE,
    limits: { maxPredict: 10, maxCtx: 10, capMode: "clamp" },
  });
  assert.equal(serializeJson(body), text);
});

Deno.test("caps: an invalid cap throws RangeError naming it", () => {
  const body = parse("{}");
  assert.throws(
    () =>
      applyCaps(body, {
        capField: NATIVE,
        limits: { maxPredict: 0, capMode: "refuse" },
      }),
    /maxPredict: 0 is not allowed/,
  );
  assert.throws(
    () =>
      applyCaps(body, {
        capField: NATIVE,
        limits: { maxCtx: 1.5, capMode: "refuse" },
      }),
    /maxCtx: 1.5/,
  );
});
