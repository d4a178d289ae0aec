import assert from "node:assert/strict";
import { parseJsonAsGo, serializeJson } from "../src/request/go_json.ts";
import {
  FieldConflictError,
  FieldSpellingError,
  FieldTypeError,
  getArray,
  getBool,
  getField,
  getMapEntry,
  getObject,
  getString,
  goFoldKey,
  setField,
  setMapEntry,
} from "../src/request/go_fields.ts";

const parse = (text: string) => parseJsonAsGo(new TextEncoder().encode(text));

Deno.test("goFoldKey folds ASCII case and the four special code points", () => {
  assert.equal(goFoldKey("MoDeL"), "model");
  assert.equal(goFoldKey("meſſages"), "messages");
  assert.equal(goFoldKey("\u212Aeep_alive"), "keep_alive");
  assert.equal(goFoldKey("\u0131mages"), "images");
  assert.equal(goFoldKey("\u0130MAGES"), "images");
  assert.equal(goFoldKey("Éé_ß"), "Éé_ß");
});

Deno.test("goFoldKey: no other code point folds onto an ASCII letter", () => {
  // Go's rule (smallest rune of the SimpleFold orbit): a regex with the
  // i and u flags matches by the same simple case folding.
  const goRule: number[] = [];
  // The upper(lower(c)) rule, from JS's case mapping where it is simple.
  const upperLower: number[] = [];
  for (let code = 0x80; code <= 0x10ffff; code++) {
    if (code >= 0xd800 && code <= 0xdfff) continue;
    const char = String.fromCodePoint(code);
    if (/^[a-z]$/iu.test(char)) goRule.push(code);
    const lower = char.toLowerCase();
    const folded = [...lower].length === 1 ? lower.toUpperCase() : "";
    if (/^[A-Z]$/.test(folded)) upperLower.push(code);
  }
  assert.deepEqual(goRule, [0x017f, 0x212a]);
  // U+0130's simple lowercase is 'i' (UnicodeData.txt); JS applies the full
  // mapping "i\u0307" instead, so it is added by hand.
  assert.deepEqual(
    [...upperLower, 0x0130].sort((x, y) => x - y),
    [0x0130, 0x0131, 0x017f, 0x212a],
  );
  for (const code of [0x0130, 0x0131, 0x017f, 0x212a]) {
    assert.match(goFoldKey(String.fromCodePoint(code)), /^[a-z]$/);
  }
});

Deno.test("getField finds case variants, ſ, Kelvin and escaped keys", () => {
  for (
    const text of [
      '{"Model":"m"}',
      '{"MODEL":"m"}',
      '{"\\u006dodel":"m"}',
      '{"other":1,"mOdEl":"m"}',
    ]
  ) {
    assert.deepEqual(getField(parse(text), "model"), {
      kind: "string",
      value: "m",
    });
  }
  assert.equal(getArray(parse('{"meſſages":[1]}'), "messages")?.length, 1);
  assert.equal(
    getString(parse('{"\u212Aeep_alive":"5m"}'), "keep_alive"),
    "5m",
  );
  assert.equal(getField(parse('{"modelx":"m"}'), "model"), undefined);
});

Deno.test("getField: equal duplicates are fine, the last one is returned", () => {
  const node = parse('{"model":"m","Model":"m","MODEL":"m"}');
  assert.equal(getString(node, "model"), "m");
  const objects = parse('{"o":{"a":[1,2]},"O":{"a":[1,2]}}');
  assert.deepEqual(serializeJson(getObject(objects, "o")!), '{"a":[1,2]}');
});

Deno.test("getField refuses keys for one field with different values", () => {
  for (
    const text of [
      '{"model":"a","Model":"b"}',
      '{"model":"a","model":"b"}',
      '{"model":"a","model":null}',
      '{"n":1,"N":1.0}',
      '{"meſſages":[],"messages":[{}]}',
      '{"o":{"a":1,"b":2},"O":{"b":2,"a":1}}',
    ]
  ) {
    const name = text.includes('"n"')
      ? "n"
      : text.includes('"o"')
      ? "o"
      : text.includes("messages")
      ? "messages"
      : "model";
    assert.throws(
      () => getField(parse(text), name, "body"),
      (error) =>
        error instanceof FieldConflictError && error.field === `body.${name}`,
      text,
    );
  }
});

Deno.test("typed getters: null is absent, wrong types throw", () => {
  const node = parse(
    '{"s":"x","b":true,"a":[1],"o":{},"n":null,"num":5,"str":"5"}',
  );
  assert.equal(getString(node, "s"), "x");
  assert.equal(getBool(node, "b"), true);
  assert.deepEqual(getArray(node, "a"), [{
    kind: "number",
    raw: "1",
    value: 1,
  }]);
  assert.deepEqual(getObject(node, "o"), { kind: "object", entries: [] });
  assert.equal(getString(node, "n"), undefined);
  assert.equal(getBool(node, "n"), undefined);
  assert.equal(getArray(node, "n"), undefined);
  assert.equal(getObject(node, "n"), undefined);
  assert.equal(getString(node, "absent"), undefined);

  const cases: Array<[() => unknown, string, string]> = [
    [() => getString(node, "num", "messages[2]"), "messages[2].num", "string"],
    [() => getBool(node, "str"), "str", "bool"],
    [() => getArray(node, "o"), "o", "array"],
    [() => getObject(node, "a"), "a", "object"],
  ];
  for (const [call, field, expected] of cases) {
    assert.throws(
      call,
      (error) =>
        error instanceof FieldTypeError && error.field === field &&
        error.expected === expected && error.message.startsWith(field),
    );
  }
});

Deno.test("type errors never echo string contents", () => {
  const node = parse('{"model":"sk-secret-prompt"}');
  assert.throws(
    () => getBool(node, "model"),
    (error) =>
      error instanceof FieldTypeError &&
      !error.message.includes("sk-secret-prompt"),
  );
});

Deno.test("getField on a non-object throws FieldTypeError", () => {
  assert.throws(
    () => getField(parse("[1]"), "model", "messages[0]"),
    (error) =>
      error instanceof FieldTypeError && error.field === "messages[0]" &&
      error.expected === "object",
  );
  assert.throws(() => getMapEntry(parse('"x"'), "num_ctx"), FieldTypeError);
});

Deno.test("getMapEntry matches exactly and refuses differing duplicates", () => {
  const options = parse('{"num_ctx":1,"NUM_CTX":2,"num_predict":5}');
  assert.deepEqual(getMapEntry(options, "num_ctx"), {
    kind: "number",
    raw: "1",
    value: 1,
  });
  assert.equal(getMapEntry(options, "Num_Ctx"), undefined);
  assert.equal(getMapEntry(parse('{"a":3,"a":3}'), "a")?.kind, "number");
  assert.throws(
    () => getMapEntry(parse('{"a":3,"a":4}'), "a", "options"),
    (error) =>
      error instanceof FieldConflictError && error.field === "options.a",
  );
});

Deno.test("setField removes every variant and appends the new value", () => {
  const node = parse(
    '{"model":"a","x":1,"Model":"b","MODEL":"c","modeL":"d","meſſages":[],"moɗel":"e"}',
  );
  const set = setField(node, "model", { kind: "string", value: "z" });
  assert.equal(
    serializeJson(set),
    '{"x":1,"meſſages":[],"moɗel":"e","model":"z"}',
  );
  assert.equal(getString(set, "model"), "z");
  // The input is left as it was.
  assert.equal(node.kind === "object" && node.entries.length, 7);

  const messages = setField(node, "messages", { kind: "array", items: [] });
  assert.equal(
    serializeJson(messages).includes("meſſages"),
    false,
  );
  const keepAlive = setField(parse('{"\u212Aeep_alive":"1h"}'), "keep_alive", {
    kind: "string",
    value: "5m",
  });
  assert.equal(serializeJson(keepAlive), '{"keep_alive":"5m"}');
});

Deno.test("setMapEntry removes exact duplicates only", () => {
  const options = parse('{"num_predict":1,"NUM_PREDICT":2,"num_predict":3}');
  const set = setMapEntry(options, "num_predict", {
    kind: "number",
    raw: "100",
    value: 100,
  });
  assert.equal(serializeJson(set), '{"NUM_PREDICT":2,"num_predict":100}');
});

Deno.test("a key that reaches a field only through ı or İ is refused", () => {
  for (const key of ["opt\u0131ons", "OPT\u0130ONS", "\u0131mages"]) {
    const field = key.toLowerCase().includes("mages") ? "images" : "options";
    const body = parse(`{"${key}":{"num_predict":10}}`);
    assert.throws(
      () => getField(body, field),
      (error: unknown) =>
        error instanceof FieldSpellingError && error.field === field &&
        error.message.includes(JSON.stringify(key)),
    );
    // Writing the field cannot leave it behind for Ollama to read either.
    assert.throws(
      () => setField(body, field, { kind: "null" }),
      FieldSpellingError,
    );
  }
  // Elsewhere the letters are ordinary: a value, or a key of another field.
  const body = parse('{"model":"\u0131","x\u0131":1}');
  assert.equal(getString(body, "model"), "\u0131");
  assert.equal(getField(body, "other"), undefined);
});
