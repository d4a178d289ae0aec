import assert from "node:assert/strict";
import {
  applyKeepAlive,
  type ApplyKeepAliveOptions,
} from "../src/policy/keep_alive.ts";
import { parseJsonAsGo, serializeJson } from "../src/request/go_json.ts";
import { FieldConflictError } from "../src/request/go_fields.ts";

type Expected =
  | "unchanged"
  | { body: string }
  | {
    reason:
      | "keep_alive_over_cap"
      | "unload_needs_management"
      | "bad_keep_alive";
    message?: string;
  };

const refuse600: ApplyKeepAliveOptions = {
  maxKeepAliveSeconds: 600,
  capMode: "refuse",
  allowManagement: false,
};
const clamp600: ApplyKeepAliveOptions = { ...refuse600, capMode: "clamp" };
const noCap: ApplyKeepAliveOptions = {
  capMode: "refuse",
  allowManagement: false,
};
const manager: ApplyKeepAliveOptions = { ...refuse600, allowManagement: true };

const OVER = { reason: "keep_alive_over_cap" } as const;
const UNLOAD = { reason: "unload_needs_management" } as const;
const BAD = { reason: "bad_keep_alive" } as const;

// [keep_alive JSON (undefined: absent), options, expected]
const CASES: Array<[string | undefined, ApplyKeepAliveOptions, Expected]> = [
  // Absent and null leave the server default.
  [undefined, refuse600, "unchanged"],
  ["null", refuse600, "unchanged"],
  // Within the cap.
  ['"5m"', refuse600, "unchanged"],
  ['"10m"', refuse600, "unchanged"],
  ["600", refuse600, "unchanged"],
  ["599.999", refuse600, "unchanged"],
  ['"9m59.5s"', refuse600, "unchanged"],
  ['"1.5s"', refuse600, "unchanged"],
  ['"1s"', refuse600, "unchanged"],
  ['"5.s"', refuse600, "unchanged"],
  ['"+5m"', refuse600, "unchanged"],
  ['"1h"', { ...refuse600, maxKeepAliveSeconds: 3600 }, "unchanged"],
  ['"5000000µs"', refuse600, "unchanged"], // micro sign U+00B5
  ['"5000000μs"', refuse600, "unchanged"], // Greek mu U+03BC
  ['"5000000us"', refuse600, "unchanged"],
  ['"1m30s500ms"', refuse600, "unchanged"],
  // Over the cap.
  ['"10m0.000000001s"', refuse600, OVER],
  ['"601s"', refuse600, {
    reason: "keep_alive_over_cap",
    message: `keep_alive "601s" exceeds this client's cap of 600 seconds`,
  }],
  ["600.5", refuse600, OVER],
  ['"1h30m"', refuse600, OVER],
  ['"1.5h"', refuse600, OVER],
  ['"2562047h"', refuse600, OVER],
  ["9e9", refuse600, OVER],
  ['"601s"', clamp600, { body: '{"model":"m","keep_alive":600}' }],
  ["86400", clamp600, { body: '{"model":"m","keep_alive":600}' }],
  // Negative means forever: over any cap.
  ["-1", refuse600, {
    reason: "keep_alive_over_cap",
    message: "keep_alive -1 (forever) exceeds this client's cap of 600",
  }],
  ['"-1s"', refuse600, OVER],
  ["-0.5", refuse600, OVER],
  ['"-9223372036854775808ns"', refuse600, OVER],
  ["-1", clamp600, { body: '{"model":"m","keep_alive":600}' }],
  ["-1", noCap, "unchanged"],
  ['"2h"', noCap, "unchanged"],
  // Zero unloads the model.
  ["0", refuse600, {
    reason: "unload_needs_management",
    message:
      "keep_alive 0 unloads the model, which needs the allow_management permission",
  }],
  ["0", clamp600, UNLOAD],
  ["0", noCap, UNLOAD],
  ["-0", refuse600, UNLOAD],
  ["0.0", refuse600, UNLOAD],
  ["1e-10", refuse600, UNLOAD], // 0.1 ns is 0 ns
  ['"0"', refuse600, UNLOAD],
  ['"0s"', refuse600, UNLOAD],
  ['"-0s"', refuse600, UNLOAD],
  ['"+0"', refuse600, UNLOAD],
  ['"0.0h"', refuse600, UNLOAD],
  ['"0h0m"', refuse600, UNLOAD],
  // Under a second, the model is gone a moment after the request: the same.
  ['"1ns"', refuse600, {
    reason: "unload_needs_management",
    message: 'keep_alive "1ns" unloads the model (anything under 1 s does), ' +
      "which needs the allow_management permission",
  }],
  ["1e-9", refuse600, UNLOAD],
  ['".5s"', refuse600, UNLOAD],
  ['"5µs"', clamp600, UNLOAD],
  ['"999ms"', noCap, UNLOAD],
  ["0.999999999", refuse600, UNLOAD],
  ['"999ms"', manager, "unchanged"],
  ["0", manager, "unchanged"],
  ['"0s"', { ...noCap, allowManagement: true }, "unchanged"],
  // Values Ollama cannot read.
  ['""', refuse600, BAD],
  ['""', noCap, BAD],
  ['"5"', refuse600, { reason: "bad_keep_alive", message: "no unit" }],
  ['"5 m"', refuse600, { reason: "bad_keep_alive", message: "unknown unit" }],
  ['"5mins"', refuse600, BAD],
  ['"1d"', refuse600, BAD],
  ['"forever"', noCap, BAD],
  ['"-"', refuse600, BAD],
  ['"."', refuse600, BAD],
  ['".s"', refuse600, BAD],
  ['"1h 30m"', refuse600, BAD],
  ['"9223372036854775808ns"', noCap, BAD],
  ['"2562048h"', noCap, BAD],
  ['"99999999999999999999s"', noCap, BAD],
  ["1e10", noCap, {
    reason: "bad_keep_alive",
    message: "more seconds than Ollama can represent",
  }],
  ["1e400", noCap, BAD],
  ["true", noCap, { reason: "bad_keep_alive", message: "a boolean" }],
  ["{}", noCap, BAD],
  ["[]", noCap, BAD],
];

function parse(text: string) {
  return parseJsonAsGo(new TextEncoder().encode(text));
}

function label(options: ApplyKeepAliveOptions): string {
  const cap = options.maxKeepAliveSeconds ?? "none";
  return `cap ${cap}, ${options.capMode}, management ${options.allowManagement}`;
}

for (const [value, options, expected] of CASES) {
  Deno.test(`keep_alive ${value ?? "absent"} (${label(options)})`, () => {
    const text = value === undefined
      ? '{"model":"m"}'
      : `{"model":"m","keep_alive":${value}}`;
    const result = applyKeepAlive(parse(text), options);

    if (expected === "unchanged") {
      assert.deepEqual(result, { kind: "unchanged" });
    } else if ("body" in expected) {
      assert.equal(result.kind, "rewritten", JSON.stringify(result));
      if (result.kind !== "rewritten") return;
      assert.equal(serializeJson(result.body), expected.body);
    } else {
      assert.equal(result.kind, "refused", JSON.stringify(result));
      if (result.kind !== "refused") return;
      assert.equal(result.reason, expected.reason, result.message);
      if (expected.message) {
        assert.ok(
          result.message.includes(expected.message),
          `message: ${result.message}`,
        );
      }
    }
  });
}

Deno.test("keep_alive: an unload request (empty messages) needs management", () => {
  const unload = parse('{"model":"m","messages":[],"keep_alive":0}');
  assert.equal(applyKeepAlive(unload, refuse600).kind, "refused");
  assert.deepEqual(applyKeepAlive(unload, manager), { kind: "unchanged" });
});

Deno.test("keep_alive: a case variant is read, and the clamp leaves one canonical key", () => {
  const body = parse('{"Keep_Alive":"2h","model":"m","KEEP_ALIVE":"2h"}');
  const refused = applyKeepAlive(body, refuse600);
  assert.equal(refused.kind, "refused");

  const clamped = applyKeepAlive(body, clamp600);
  assert.equal(clamped.kind, "rewritten");
  if (clamped.kind !== "rewritten") return;
  assert.equal(serializeJson(clamped.body), '{"model":"m","keep_alive":600}');
});

Deno.test("keep_alive: the Kelvin sign folds to k, other letters do not", () => {
  const kelvin = parse('{"model":"m","\u212aeep_alive":0}');
  assert.equal(applyKeepAlive(kelvin, refuse600).kind, "refused");

  const other = parse('{"model":"m","keep_alivé":0}');
  assert.deepEqual(applyKeepAlive(other, refuse600), { kind: "unchanged" });
});

Deno.test("keep_alive: case variants that disagree throw FieldConflictError", () => {
  const body = parse('{"keep_alive":"1m","Keep_alive":-1}');
  assert.throws(() => applyKeepAlive(body, refuse600), FieldConflictError);
});

Deno.test("keep_alive: the refusal message does not echo a long value", () => {
  const long = "9".repeat(200) + "h";
  const result = applyKeepAlive(
    parse(`{"keep_alive":"${long}"}`),
    noCap,
  );
  assert.equal(result.kind, "refused");
  if (result.kind !== "refused") return;
  assert.ok(result.message.length < 200, result.message);
});

Deno.test("keep_alive: an invalid cap throws RangeError naming it", () => {
  assert.throws(
    () => applyKeepAlive(parse("{}"), { ...refuse600, maxKeepAliveSeconds: 0 }),
    /maxKeepAliveSeconds: 0 is not allowed/,
  );
});
