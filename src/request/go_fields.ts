/**
 * Field lookup as Go's `encoding/json` does it when Ollama decodes a body
 * into a struct: keys match field names case-insensitively and the last
 * matching key wins. Butler goes one step further and refuses a body whose
 * keys for one field disagree, because Go does not simply "take the last":
 * a repeated map or slice field is decoded into the value already there
 * (maps merge, slice elements are reused), so only identical repeats are
 * unambiguous.
 *
 * Free-form maps (`options`) are decoded by Go into `map[string]any`, where
 * keys are exact; {@linkcode getMapEntry} and {@linkcode setMapEntry} serve
 * those.
 *
 * @module
 */

import { type JsonNode, serializeJson } from "./go_json.ts";

/** Two keys that Go reads into the same field carry different values. */
export class FieldConflictError extends Error {
  /** The field, with its path, e.g. `messages[2].content`. */
  readonly field: string;

  /** Builds the error for `field`; `keys` are the keys as they appeared. */
  constructor(field: string, keys: readonly string[]) {
    super(
      `${field}: the body sets this field ${keys.length} times with ` +
        `different values (keys ${
          keys.map((key) => JSON.stringify(key)).join(", ")
        }); send it once`,
    );
    this.name = "FieldConflictError";
    this.field = field;
  }
}

/** A field's value has a JSON type Ollama would refuse or misread. */
export class FieldTypeError extends Error {
  /** The field, with its path, e.g. `messages[2].content`. */
  readonly field: string;
  /** What the field must be: `string`, `bool`, `array` or `object`. */
  readonly expected: string;

  /** Builds the error for `field`, which held `got` instead of `expected`. */
  constructor(field: string, expected: string, got: JsonNode) {
    super(`${field}: must be ${article(expected)}, got ${describe(got)}`);
    this.name = "FieldTypeError";
    this.field = field;
    this.expected = expected;
  }
}

/**
 * A key spelled with the dotted capital `İ` (U+0130) or the dotless `ı`
 * (U+0131) that lands on a field under one reading of Go's folding and not
 * under the other.
 */
export class FieldSpellingError extends Error {
  /** The field, with its path, e.g. `options`. */
  readonly field: string;

  /** Builds the error for `field`, named by `key` in the body. */
  constructor(field: string, key: string) {
    super(
      `${field}: the key ${JSON.stringify(key)} spells the field with a ` +
        `dotted or dotless i (U+0130, U+0131), which Go may or may not read ` +
        `as this field; spell it with ASCII letters`,
    );
    this.name = "FieldSpellingError";
    this.field = field;
  }
}

/**
 * Folds an object key the way Go matches it to a struct field, for comparing
 * with an ASCII field name.
 *
 * Go (`encoding/json/fold.go`) upper-cases ASCII letters and replaces every
 * other rune by the smallest rune of its `unicode.SimpleFold` orbit; the only
 * non-ASCII runes whose orbit holds an ASCII letter are the long s `ſ`
 * (U+017F, with `s`) and the Kelvin sign (U+212A, with `k`). The shared
 * Ollama notes describe the fold as `upper(lower(c))`, which would also send
 * the dotted capital `İ` (U+0130) and the dotless `ı` (U+0131) to `i`, while
 * Go's tables leave those two alone. This fold maps them to `i` so that such
 * a key is found, and {@linkcode getField} and {@linkcode setField} then
 * refuse it ({@linkcode FieldSpellingError}): taking it as the field would be
 * wrong under Go's reading and ignoring it wrong under the notes', so only a
 * refusal is safe under both. ASCII letters are lower-cased; any other
 * non-ASCII code point is left as is, since it cannot fold onto an ASCII
 * letter under either rule and every field name Butler reads is ASCII.
 *
 * @example
 * ```ts
 * goFoldKey("Meſſages"); // "messages"
 * ```
 */
export function goFoldKey(key: string): string {
  let folded = "";
  for (let i = 0; i < key.length; i++) {
    const code = key.charCodeAt(i);
    if (code >= 0x41 && code <= 0x5a) {
      folded += String.fromCharCode(code + 0x20);
    } else if (code < 0x80) {
      folded += key[i];
    } else if (code === 0x017f) {
      folded += "s";
    } else if (code === 0x212a) {
      folded += "k";
    } else if (code === 0x0130 || code === 0x0131) {
      folded += "i";
    } else {
      folded += key[i];
    }
  }
  return folded;
}

/**
 * The value Go assigns to struct field `name` of `node`: the last key whose
 * fold equals the field's. Keys for the field with differing values throw
 * {@linkcode FieldConflictError}; a non-object `node` throws
 * {@linkcode FieldTypeError}. `path` locates `node` in messages
 * (e.g. `messages[2]`).
 *
 * @example
 * ```ts
 * getField(parseJsonAsGo(bytes), "model"); // finds "Model", "MODEL", …
 * ```
 */
export function getField(
  node: JsonNode,
  name: string,
  path?: string,
): JsonNode | undefined {
  return lastAgreeing(node, name, path, foldsTo(name, path));
}

/**
 * `getField` for a string field. JSON `null` counts as absent (Go leaves the
 * field unchanged); another type throws {@linkcode FieldTypeError}.
 */
export function getString(
  node: JsonNode,
  name: string,
  path?: string,
): string | undefined {
  const value = getField(node, name, path);
  if (value === undefined || value.kind === "null") return undefined;
  if (value.kind !== "string") {
    throw new FieldTypeError(fieldPath(path, name), "string", value);
  }
  return value.value;
}

/** `getField` for a boolean field; `null` is absent, another type throws. */
export function getBool(
  node: JsonNode,
  name: string,
  path?: string,
): boolean | undefined {
  const value = getField(node, name, path);
  if (value === undefined || value.kind === "null") return undefined;
  if (value.kind !== "bool") {
    throw new FieldTypeError(fieldPath(path, name), "bool", value);
  }
  return value.value;
}

/** `getField` for an array field; `null` is absent, another type throws. */
export function getArray(
  node: JsonNode,
  name: string,
  path?: string,
): JsonNode[] | undefined {
  const value = getField(node, name, path);
  if (value === undefined || value.kind === "null") return undefined;
  if (value.kind !== "array") {
    throw new FieldTypeError(fieldPath(path, name), "array", value);
  }
  return value.items;
}

/**
 * `getField` for an object field, returning the object node; `null` is
 * absent, another type throws.
 */
export function getObject(
  node: JsonNode,
  name: string,
  path?: string,
): JsonNode | undefined {
  const value = getField(node, name, path);
  if (value === undefined || value.kind === "null") return undefined;
  if (value.kind !== "object") {
    throw new FieldTypeError(fieldPath(path, name), "object", value);
  }
  return value;
}

/**
 * Exact (case-sensitive) lookup of `key` in a free-form map such as
 * `options`. The last duplicate wins; differing duplicates throw
 * {@linkcode FieldConflictError}.
 */
export function getMapEntry(
  node: JsonNode,
  key: string,
  path?: string,
): JsonNode | undefined {
  return lastAgreeing(node, key, path, (candidate) => candidate === key);
}

/**
 * A new object node without any key that folds to `name`, then with
 * `[name, value]` appended: Go reads `value` and nothing else for the field.
 *
 * @example
 * ```ts
 * setField(body, "model", { kind: "string", value: "llama3.2:1b" });
 * ```
 */
export function setField(
  node: JsonNode,
  name: string,
  value: JsonNode,
): JsonNode {
  return replaceEntries(node, name, value, foldsTo(name, undefined));
}

/**
 * Whether a key lands on field `name`; throws {@linkcode FieldSpellingError}
 * for a key that does only by a dotted or dotless i.
 */
function foldsTo(
  name: string,
  path: string | undefined,
): (key: string) => boolean {
  const folded = goFoldKey(name);
  return (key) => {
    if (goFoldKey(key) !== folded) return false;
    if (AMBIGUOUS_I.test(key)) {
      throw new FieldSpellingError(fieldPath(path, name), key);
    }
    return true;
  };
}

/** The two code points whose folding Go and the shared notes disagree on. */
const AMBIGUOUS_I = /[\u0130\u0131]/;

/** A new object node with every exact `key` removed, then `[key, value]` appended. */
export function setMapEntry(
  node: JsonNode,
  key: string,
  value: JsonNode,
): JsonNode {
  return replaceEntries(node, key, value, (candidate) => candidate === key);
}

function lastAgreeing(
  node: JsonNode,
  name: string,
  path: string | undefined,
  matches: (key: string) => boolean,
): JsonNode | undefined {
  if (node.kind !== "object") {
    throw new FieldTypeError(path ?? "body", "object", node);
  }

  let found: JsonNode | undefined;
  const keys: string[] = [];
  let conflict = false;
  for (const [key, value] of node.entries) {
    if (!matches(key)) continue;
    if (found !== undefined && !conflict && !sameJson(found, value)) {
      conflict = true;
    }
    found = value;
    keys.push(key);
  }

  if (conflict) throw new FieldConflictError(fieldPath(path, name), keys);
  return found;
}

function replaceEntries(
  node: JsonNode,
  name: string,
  value: JsonNode,
  matches: (key: string) => boolean,
): JsonNode {
  if (node.kind !== "object") {
    throw new FieldTypeError("body", "object", node);
  }
  const entries = node.entries.filter(([key]) => !matches(key));
  entries.push([name, value]);
  return { kind: "object", entries };
}

/**
 * Structural equality, the same as comparing `serializeJson` output
 * (numbers by source text) without building two strings for large values.
 */
function sameJson(a: JsonNode, b: JsonNode): boolean {
  switch (a.kind) {
    case "object": {
      if (b.kind !== "object" || a.entries.length !== b.entries.length) {
        return false;
      }
      return a.entries.every(([key, value], index) =>
        key === b.entries[index][0] && sameJson(value, b.entries[index][1])
      );
    }
    case "array":
      return b.kind === "array" && a.items.length === b.items.length &&
        a.items.every((item, index) => sameJson(item, b.items[index]));
    case "string":
      return b.kind === "string" && a.value === b.value;
    case "number":
      return b.kind === "number" && a.raw === b.raw;
    case "bool":
      return b.kind === "bool" && a.value === b.value;
    case "null":
      return b.kind === "null";
  }
}

function fieldPath(path: string | undefined, name: string): string {
  return path ? `${path}.${name}` : name;
}

function article(kind: string): string {
  return kind === "array" || kind === "object" ? `an ${kind}` : `a ${kind}`;
}

/** Names a value's type without echoing its content (it may be a prompt). */
function describe(node: JsonNode): string {
  switch (node.kind) {
    case "number":
      return `the number ${
        node.raw.length > 32 ? node.raw.slice(0, 32) + "…" : node.raw
      }`;
    case "bool":
      return `the boolean ${node.value}`;
    case "null":
      return "null";
    default:
      return `${article(node.kind)} (${serializeJsonKindHint(node)})`;
  }
}

function serializeJsonKindHint(node: JsonNode): string {
  if (node.kind === "string") return `${node.value.length} characters`;
  if (node.kind === "array") return `${node.items.length} elements`;
  if (node.kind === "object") return `${node.entries.length} keys`;
  return serializeJson(node);
}
