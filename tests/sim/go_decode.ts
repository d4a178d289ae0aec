/**
 * A reference decoder that reads a request body the way Ollama's Go code
 * does: `encoding/json` syntax rules, a `json.Decoder` that ignores what
 * follows the first value, struct fields matched exactly first and then by
 * Go's case fold, the last duplicate winning, decoding into existing values
 * (maps keep their keys, slice elements and pointed-to structs are reused),
 * and the request structs and custom unmarshalers of Ollama's `api`,
 * `openai` and `anthropic` packages.
 *
 * It is written from the Go rules alone and shares no code with Butler's
 * `src/`: Butler's tests check Butler against it.
 *
 * @module
 */

// ---------------------------------------------------------------------------
// Syntax: a JSON document as Go's scanner accepts it, keeping key order and
// duplicate keys.

/** One parsed JSON value, with object members in document order. */
export type GoNode =
  | { readonly kind: "null" }
  | { readonly kind: "bool"; readonly value: boolean }
  | { readonly kind: "number"; readonly literal: string }
  | { readonly kind: "string"; readonly value: string }
  | { readonly kind: "array"; readonly items: readonly GoNode[] }
  | {
    readonly kind: "object";
    readonly members: readonly (readonly [string, GoNode])[];
  };

/** A syntax error, or the end of input before any value (`io.EOF`). */
export class GoJsonSyntaxError extends Error {
  /** True when the input held no value at all (Go's `io.EOF`). */
  readonly eof: boolean;

  constructor(message: string, eof = false) {
    super(message);
    this.name = "GoJsonSyntaxError";
    this.eof = eof;
  }
}

const MAX_DEPTH = 10000;

class Scanner {
  #text: string;
  #pos = 0;
  #depth = 0;

  constructor(text: string) {
    this.#text = text;
  }

  get pos(): number {
    return this.#pos;
  }

  skipSpace(): void {
    const t = this.#text;
    while (this.#pos < t.length) {
      const c = t.charCodeAt(this.#pos);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      this.#pos++;
    }
  }

  atEnd(): boolean {
    return this.#pos >= this.#text.length;
  }

  value(context: string): GoNode {
    this.skipSpace();
    if (this.atEnd()) throw new GoJsonSyntaxError("unexpected EOF");
    const c = this.#text[this.#pos];
    switch (c) {
      case "{":
        return this.#nested(() => this.#object());
      case "[":
        return this.#nested(() => this.#array());
      case '"':
        return { kind: "string", value: this.#string() };
      case "t":
        this.#word("true");
        return { kind: "bool", value: true };
      case "f":
        this.#word("false");
        return { kind: "bool", value: false };
      case "n":
        this.#word("null");
        return { kind: "null" };
      default:
        if (c === "-" || (c >= "0" && c <= "9")) return this.#number();
        throw this.#invalid(context);
    }
  }

  #invalid(context: string): GoJsonSyntaxError {
    const c = String.fromCodePoint(this.#text.codePointAt(this.#pos)!);
    const shown = c === "'" ? "'\\''" : c === '"' ? "'\"'" : `'${c}'`;
    return new GoJsonSyntaxError(`invalid character ${shown} ${context}`);
  }

  #nested(read: () => GoNode): GoNode {
    if (++this.#depth > MAX_DEPTH) {
      throw new GoJsonSyntaxError("exceeded max depth");
    }
    const node = read();
    this.#depth--;
    return node;
  }

  #word(word: string): void {
    for (let i = 0; i < word.length; i++) {
      if (this.atEnd()) throw new GoJsonSyntaxError("unexpected EOF");
      if (this.#text[this.#pos] !== word[i]) {
        throw this.#invalid(`in literal ${word} (expecting '${word[i]}')`);
      }
      this.#pos++;
    }
  }

  #number(): GoNode {
    const t = this.#text;
    const start = this.#pos;
    const digits = () => {
      while (
        this.#pos < t.length && t[this.#pos] >= "0" && t[this.#pos] <= "9"
      ) {
        this.#pos++;
      }
    };
    const need = (context: string) => {
      if (this.atEnd()) throw new GoJsonSyntaxError("unexpected EOF");
      const c = t[this.#pos];
      if (c < "0" || c > "9") throw this.#invalid(context);
    };

    if (t[this.#pos] === "-") this.#pos++;
    need("in numeric literal");
    if (t[this.#pos] === "0") this.#pos++;
    else digits();
    if (t[this.#pos] === ".") {
      this.#pos++;
      need("after decimal point in numeric literal");
      digits();
    }
    if (t[this.#pos] === "e" || t[this.#pos] === "E") {
      this.#pos++;
      if (t[this.#pos] === "+" || t[this.#pos] === "-") this.#pos++;
      need("in exponent of numeric literal");
      digits();
    }
    return { kind: "number", literal: t.slice(start, this.#pos) };
  }

  #string(): string {
    const t = this.#text;
    this.#pos++; // opening quote
    let out = "";
    let start = this.#pos;
    while (true) {
      if (this.#pos >= t.length) throw new GoJsonSyntaxError("unexpected EOF");
      const c = t.charCodeAt(this.#pos);
      if (c === 0x22) {
        out += t.slice(start, this.#pos);
        this.#pos++;
        return out;
      }
      if (c < 0x20) throw this.#invalid("in string literal");
      if (c !== 0x5c) {
        this.#pos++;
        continue;
      }
      out += t.slice(start, this.#pos);
      out += this.#escape();
      start = this.#pos;
    }
  }

  #escape(): string {
    const t = this.#text;
    this.#pos++; // backslash
    if (this.#pos >= t.length) throw new GoJsonSyntaxError("unexpected EOF");
    const e = t[this.#pos++];
    const simple: Record<string, string> = {
      '"': '"',
      "\\": "\\",
      "/": "/",
      b: "\b",
      f: "\f",
      n: "\n",
      r: "\r",
      t: "\t",
    };
    if (e in simple) return simple[e];
    if (e !== "u") {
      this.#pos--;
      throw this.#invalid("in string escape code");
    }
    const unit = this.#hex4();
    if (unit >= 0xd800 && unit < 0xdc00) {
      // Go pairs a high surrogate only with an escaped low surrogate.
      if (t.startsWith("\\u", this.#pos)) {
        const save = this.#pos;
        this.#pos += 2;
        const low = this.#hex4();
        if (low >= 0xdc00 && low < 0xe000) {
          return String.fromCharCode(unit, low);
        }
        this.#pos = save;
      }
      return "\uFFFD";
    }
    if (unit >= 0xdc00 && unit < 0xe000) return "\uFFFD";
    return String.fromCharCode(unit);
  }

  #hex4(): number {
    let n = 0;
    for (let i = 0; i < 4; i++) {
      if (this.#pos >= this.#text.length) {
        throw new GoJsonSyntaxError("unexpected EOF");
      }
      const d = parseInt(this.#text[this.#pos], 16);
      if (Number.isNaN(d)) {
        throw this.#invalid("in \\u hexadecimal character escape");
      }
      n = n * 16 + d;
      this.#pos++;
    }
    return n;
  }

  #object(): GoNode {
    this.#pos++; // {
    const members: [string, GoNode][] = [];
    this.skipSpace();
    if (this.#text[this.#pos] === "}") {
      this.#pos++;
      return { kind: "object", members };
    }
    while (true) {
      this.skipSpace();
      if (this.atEnd()) throw new GoJsonSyntaxError("unexpected EOF");
      if (this.#text[this.#pos] !== '"') {
        throw this.#invalid("looking for beginning of object key string");
      }
      const key = this.#string();
      this.skipSpace();
      if (this.atEnd()) throw new GoJsonSyntaxError("unexpected EOF");
      if (this.#text[this.#pos] !== ":") {
        throw this.#invalid("after object key");
      }
      this.#pos++;
      members.push([key, this.value("looking for beginning of value")]);
      this.skipSpace();
      if (this.atEnd()) throw new GoJsonSyntaxError("unexpected EOF");
      const c = this.#text[this.#pos++];
      if (c === "}") return { kind: "object", members };
      if (c !== ",") {
        this.#pos--;
        throw this.#invalid("after object key:value pair");
      }
    }
  }

  #array(): GoNode {
    this.#pos++; // [
    const items: GoNode[] = [];
    this.skipSpace();
    if (this.#text[this.#pos] === "]") {
      this.#pos++;
      return { kind: "array", items };
    }
    while (true) {
      items.push(this.value("looking for beginning of value"));
      this.skipSpace();
      if (this.atEnd()) throw new GoJsonSyntaxError("unexpected EOF");
      const c = this.#text[this.#pos++];
      if (c === "]") return { kind: "array", items };
      if (c !== ",") {
        this.#pos--;
        throw this.#invalid("after array element");
      }
    }
  }
}

/** Go decodes invalid UTF-8 as U+FFFD and keeps a byte-order mark as a byte. */
function bytesToText(bytes: Uint8Array | string): string {
  if (typeof bytes === "string") return bytes;
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);
}

/**
 * Reads the first JSON value of `input` the way Go's `json.Decoder.Decode`
 * does: anything after that value is never looked at. Throws
 * {@linkcode GoJsonSyntaxError} (with `eof` set when there is no value).
 */
export function decodeFirstValue(input: Uint8Array | string): GoNode {
  const scanner = new Scanner(bytesToText(input));
  scanner.skipSpace();
  if (scanner.atEnd()) throw new GoJsonSyntaxError("EOF", true);
  return scanner.value("looking for beginning of value");
}

/**
 * Reads `input` the way Go's `json.Unmarshal` does: one value and nothing
 * but white space after it.
 */
export function unmarshalWhole(input: Uint8Array | string): GoNode {
  const scanner = new Scanner(bytesToText(input));
  scanner.skipSpace();
  if (scanner.atEnd()) {
    throw new GoJsonSyntaxError("unexpected end of JSON input");
  }
  const node = scanner.value("looking for beginning of value");
  scanner.skipSpace();
  if (!scanner.atEnd()) {
    throw new GoJsonSyntaxError(
      "invalid character after top-level value",
    );
  }
  return node;
}

// ---------------------------------------------------------------------------
// Go's case fold for struct field names.

/**
 * Which fold the simulator applies to the dotted capital `İ` (U+0130) and
 * the dotless `ı` (U+0131), the two runes on which readings of Go differ:
 * `notes` (the shared Ollama notes: `upper(lower(r))`, so both fold to `I`)
 * or `go` (Go's `unicode.SimpleFold` orbits, in which both fold only to
 * themselves). Every other rune folds the same under both.
 */
export type FoldReading = "notes" | "go";

let foldReading: FoldReading = "notes";

/**
 * Sets the fold reading for every decode in this process and returns the
 * previous one (tests run a body under both and restore it).
 */
export function setFoldReading(reading: FoldReading): FoldReading {
  const previous = foldReading;
  foldReading = reading;
  return previous;
}

/**
 * Folds a key the way Go's `encoding/json` does before comparing it to a
 * field name: ASCII letters to upper case, every other rune to
 * `unicode.ToUpper(unicode.ToLower(r))` with simple (one-rune) mappings.
 * So `ſ` folds to `S`, the Kelvin sign to `K`, and under the `notes`
 * reading (the default, see {@linkcode setFoldReading}) `ı` and `İ` to `I`.
 */
export function goFoldName(name: string): string {
  let out = "";
  for (const ch of name) {
    const cp = ch.codePointAt(0)!;
    if (cp < 0x80) {
      out += cp >= 0x61 && cp <= 0x7a ? String.fromCharCode(cp - 32) : ch;
      continue;
    }
    if ((cp === 0x130 || cp === 0x131) && foldReading === "go") {
      out += ch;
      continue;
    }
    out += simpleUpper(simpleLower(ch));
  }
  return out;
}

/** Unicode simple lower-case mapping (one rune to one rune). */
function simpleLower(ch: string): string {
  if (ch === "\u0130") return "i"; // İ: the full mapping adds a combining dot
  const lower = ch.toLowerCase();
  return [...lower].length === 1 ? lower : ch;
}

/** Unicode simple upper-case mapping (one rune to one rune). */
function simpleUpper(ch: string): string {
  const upper = ch.toUpperCase();
  return [...upper].length === 1 ? upper : ch;
}

// ---------------------------------------------------------------------------
// Decoding into Go types.

/** A decoded Go map (`map[string]T`): exact keys, last duplicate wins. */
export type GoMap = Map<string, GoValue>;

/** A decoded Go value. Structs are plain objects keyed by JSON field name. */
export type GoValue =
  | null
  | boolean
  | number
  | string
  | GoNode
  | GoValue[]
  | GoMap
  | { [field: string]: GoValue };

/** Shared state of one decode: the first error, as Go keeps it. */
export interface DecodeState {
  error?: string;
}

/** How to decode one Go type. */
export type GoType =
  | { readonly kind: "string" | "bool" | "any" | "raw" | "bytes" }
  | { readonly kind: "int" | "float64" | "float32" }
  | { readonly kind: "ptr"; readonly elem: GoType }
  | { readonly kind: "slice"; readonly elem: GoType }
  | { readonly kind: "map"; readonly elem: GoType }
  | {
    readonly kind: "struct";
    readonly name: string;
    readonly fields: readonly (readonly [string, GoType])[];
  }
  | {
    readonly kind: "custom";
    readonly name: string;
    readonly decode: (node: GoNode, state: DecodeState) => GoValue;
  };

/** Type constructors, named after the Go types they stand for. */
export const go = {
  string: { kind: "string" } as GoType,
  bool: { kind: "bool" } as GoType,
  int: { kind: "int" } as GoType,
  float64: { kind: "float64" } as GoType,
  float32: { kind: "float32" } as GoType,
  any: { kind: "any" } as GoType,
  raw: { kind: "raw" } as GoType,
  bytes: { kind: "bytes" } as GoType,
  ptr(elem: GoType): GoType {
    return { kind: "ptr", elem };
  },
  slice(elem: GoType): GoType {
    return { kind: "slice", elem };
  },
  map(elem: GoType): GoType {
    return { kind: "map", elem };
  },
  struct(name: string, fields: Record<string, GoType>): GoType {
    return { kind: "struct", name, fields: Object.entries(fields) };
  },
  custom(
    name: string,
    decode: (node: GoNode, state: DecodeState) => GoValue,
  ): GoType {
    return { kind: "custom", name, decode };
  },
};

/** The error a decode ended with (Go's `UnmarshalTypeError` and friends). */
export class GoDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "GoDecodeError";
  }
}

// The spare elements beyond a slice's length that Go keeps in its backing
// array and reuses when a later array decodes into the same slice.
const BACKING = Symbol("backing");

function goTypeName(type: GoType): string {
  switch (type.kind) {
    case "ptr":
      return "*" + goTypeName(type.elem);
    case "slice":
      return "[]" + goTypeName(type.elem);
    case "map":
      return "map[string]" + goTypeName(type.elem);
    case "struct":
    case "custom":
      return type.name;
    case "any":
      return "interface {}";
    case "raw":
      return "json.RawMessage";
    case "bytes":
      return "[]uint8";
    default:
      return type.kind;
  }
}

function nodeKindName(node: GoNode): string {
  switch (node.kind) {
    case "number":
      return "number";
    case "bool":
      return "bool";
    case "array":
      return "array";
    case "object":
      return "object";
    default:
      return node.kind;
  }
}

function typeError(
  state: DecodeState,
  node: GoNode,
  type: GoType,
  path: string,
): void {
  if (state.error !== undefined) return;
  const value = node.kind === "number"
    ? `number ${node.literal}`
    : nodeKindName(node);
  const where = path.includes(".") ? `Go struct field ${path}` : "Go value";
  state.error = `json: cannot unmarshal ${value} into ${where} of type ${
    goTypeName(type)
  }`;
}

/** The zero value of a Go type. */
export function zeroValue(type: GoType): GoValue {
  switch (type.kind) {
    case "string":
      return "";
    case "bool":
      return false;
    case "int":
    case "float64":
    case "float32":
      return 0;
    case "struct": {
      const out: Record<string, GoValue> = {};
      for (const [name, t] of type.fields) out[name] = zeroValue(t);
      return out;
    }
    default:
      return null;
  }
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

function parseGoInt(literal: string): number | undefined {
  if (!/^-?[0-9]+$/.test(literal)) return undefined;
  const big = BigInt(literal);
  if (big < INT64_MIN || big > INT64_MAX) return undefined;
  return Number(big);
}

function parseGoFloat(literal: string, bits: 32 | 64): number | undefined {
  const n = Number(literal);
  if (!Number.isFinite(n)) return undefined;
  if (bits === 32 && Math.abs(n) > 3.4028234663852886e38) return undefined;
  return n;
}

/** Decodes a node into `interface{}`: maps, slices, float64, string, bool. */
export function decodeAny(node: GoNode, state: DecodeState): GoValue {
  switch (node.kind) {
    case "null":
      return null;
    case "bool":
      return node.value;
    case "string":
      return node.value;
    case "number": {
      const n = parseGoFloat(node.literal, 64);
      if (n === undefined) {
        typeError(state, node, go.float64, "");
        return null;
      }
      return n;
    }
    case "array":
      return node.items.map((item) => decodeAny(item, state));
    case "object": {
      const out: GoMap = new Map();
      for (const [k, v] of node.members) out.set(k, decodeAny(v, state));
      return out;
    }
  }
}

function decodeStruct(
  node: GoNode & { kind: "object" },
  type: GoType & { kind: "struct" },
  existing: GoValue,
  state: DecodeState,
): GoValue {
  const out: Record<string, GoValue> = {
    ...(existing && typeof existing === "object" && !Array.isArray(existing) &&
        !(existing instanceof Map)
      ? existing as Record<string, GoValue>
      : zeroValue(type) as Record<string, GoValue>),
  };
  const exact = new Map<string, GoType>();
  const folded = new Map<string, string>();
  for (const [name, t] of type.fields) {
    exact.set(name, t);
    const f = goFoldName(name);
    if (!folded.has(f)) folded.set(f, name);
  }

  for (const [key, value] of node.members) {
    const name = exact.has(key) ? key : folded.get(goFoldName(key));
    if (name === undefined) continue; // unknown keys are ignored
    out[name] = decodeInto(value, exact.get(name)!, out[name], {
      state,
      path: `${type.name}.${name}`,
    });
  }
  return out;
}

function decodeSlice(
  node: GoNode & { kind: "array" },
  type: GoType & { kind: "slice" },
  existing: GoValue,
  state: DecodeState,
  path: string,
): GoValue {
  if (node.items.length === 0) return []; // Go makes a fresh empty slice
  const old = Array.isArray(existing)
    ? ((existing as unknown as Record<symbol, GoValue[]>)[BACKING] ??
      existing)
    : [];
  const backing: GoValue[] = [...old];
  node.items.forEach((item, i) => {
    const prior = i < backing.length ? backing[i] : zeroValue(type.elem);
    backing[i] = decodeInto(item, type.elem, prior, { state, path });
  });
  const out = backing.slice(0, node.items.length);
  Object.defineProperty(out, BACKING, { value: backing, enumerable: false });
  return out;
}

function decodeBytes(
  node: GoNode,
  state: DecodeState,
  path: string,
): GoValue {
  if (node.kind === "null") return null;
  if (node.kind === "array") {
    return decodeSlice(
      node,
      { kind: "slice", elem: go.int },
      null,
      state,
      path,
    );
  }
  if (node.kind !== "string") {
    typeError(state, node, go.bytes, path);
    return null;
  }
  // Go's []byte is standard base64 with padding; \r and \n are skipped.
  const text = node.value.replace(/[\r\n]/g, "");
  if (
    text.length % 4 !== 0 ||
    !/^[A-Za-z0-9+/]*={0,2}$/.test(text) ||
    /=[^=]/.test(text)
  ) {
    state.error ??= "illegal base64 data at input byte 0";
  }
  return node.value;
}

/**
 * Decodes `node` into a value of Go type `type` that already holds
 * `existing`, with Go's reuse rules. Type mismatches are recorded in
 * `options.state` (the first one wins) and leave the value unchanged.
 */
export function decodeInto(
  node: GoNode,
  type: GoType,
  existing: GoValue,
  options: { state: DecodeState; path?: string },
): GoValue {
  const { state } = options;
  const path = options.path ?? "";
  switch (type.kind) {
    case "string":
      if (node.kind === "null") return existing;
      if (node.kind === "string") return node.value;
      typeError(state, node, type, path);
      return existing;
    case "bool":
      if (node.kind === "null") return existing;
      if (node.kind === "bool") return node.value;
      typeError(state, node, type, path);
      return existing;
    case "int":
    case "float64":
    case "float32": {
      if (node.kind === "null") return existing;
      if (node.kind !== "number") {
        typeError(state, node, type, path);
        return existing;
      }
      const n = type.kind === "int"
        ? parseGoInt(node.literal)
        : parseGoFloat(node.literal, type.kind === "float32" ? 32 : 64);
      if (n === undefined) {
        typeError(state, node, type, path);
        return existing;
      }
      return n;
    }
    case "any":
      return decodeAny(node, state);
    case "raw":
      return node;
    case "bytes":
      return decodeBytes(node, state, path);
    case "ptr":
      if (node.kind === "null") return null;
      return decodeInto(node, type.elem, existing ?? zeroValue(type.elem), {
        state,
        path,
      });
    case "slice":
      if (node.kind === "null") return null;
      if (node.kind !== "array") {
        typeError(state, node, type, path);
        return existing;
      }
      return decodeSlice(node, type, existing, state, path);
    case "map": {
      if (node.kind === "null") return null;
      if (node.kind !== "object") {
        typeError(state, node, type, path);
        return existing;
      }
      // Go reuses a non-nil map: earlier keys survive a second object.
      const out: GoMap = existing instanceof Map
        ? new Map(existing)
        : new Map();
      for (const [k, v] of node.members) {
        out.set(
          k,
          decodeInto(v, type.elem, zeroValue(type.elem), { state, path }),
        );
      }
      return out;
    }
    case "struct":
      if (node.kind === "null") return existing;
      if (node.kind !== "object") {
        typeError(state, node, type, path);
        return existing;
      }
      return decodeStruct(node, type, existing, state);
    case "custom": {
      // A custom UnmarshalJSON error stops the decode; keep the first.
      const inner: DecodeState = {};
      const value = type.decode(node, inner);
      if (inner.error !== undefined) state.error ??= inner.error;
      return value;
    }
  }
}

/**
 * Decodes a whole node as `json.Unmarshal(data, &v)` would into a fresh `v`,
 * for use inside custom unmarshalers.
 */
export function unmarshalNode(
  node: GoNode,
  type: GoType,
  state: DecodeState,
): GoValue {
  return decodeInto(node, type, zeroValue(type), { state, path: "" });
}

/** The outcome of reading a request body into a Go struct. */
export interface GoDecodeResult {
  /** The decoded struct (present when there was a value at all). */
  value?: Record<string, GoValue>;
  /** Go's error text, as Ollama returns it in a 400. */
  error?: string;
  /** The body held no JSON value at all (Go's `io.EOF`). */
  eof?: boolean;
}

/**
 * Reads `body` as gin's `ShouldBindJSON` into Go type `type` (a struct):
 * the first JSON value only, Go's field rules, the first error reported.
 */
export function bindJson(
  body: Uint8Array | string,
  type: GoType,
): GoDecodeResult {
  let node: GoNode;
  try {
    node = decodeFirstValue(body);
  } catch (e) {
    if (e instanceof GoJsonSyntaxError) {
      return { error: e.eof ? "EOF" : e.message, eof: e.eof };
    }
    throw e;
  }
  const state: DecodeState = {};
  const value = decodeInto(node, type, zeroValue(type), { state });
  return {
    value: value as Record<string, GoValue>,
    error: state.error,
  };
}

// ---------------------------------------------------------------------------
// Ollama's custom unmarshalers.

function parseGoDuration(text: string): number | undefined {
  // time.ParseDuration: [-+]?(\d*\.?\d+unit)+ or "0"; returns nanoseconds.
  if (text === "0" || text === "+0" || text === "-0") return 0;
  const units: Record<string, number> = {
    ns: 1,
    us: 1e3,
    "µs": 1e3,
    "μs": 1e3,
    ms: 1e6,
    s: 1e9,
    m: 60e9,
    h: 3600e9,
  };
  const m =
    /^([-+]?)((?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+)$/
      .exec(text);
  if (!m) return undefined;
  let total = 0;
  for (
    const part of m[2].matchAll(/([0-9]*\.?[0-9]*)(ns|us|µs|μs|ms|s|m|h)/g)
  ) {
    total += Number(part[1]) * units[part[2]];
  }
  return m[1] === "-" ? -total : total;
}

/** `api.Duration` (keep_alive): a number of seconds or a Go duration string. */
const DURATION = go.custom("api.Duration", (node, state) => {
  if (node.kind === "number") {
    const n = parseGoFloat(node.literal, 64);
    if (n === undefined) {
      state.error =
        `json: cannot unmarshal number ${node.literal} into Go value of type float64`;
      return null;
    }
    return n;
  }
  if (node.kind === "string") {
    if (parseGoDuration(node.value) === undefined) {
      state.error = `time: invalid duration "${node.value}"`;
    }
    return node.value;
  }
  const goType = node.kind === "bool"
    ? "bool"
    : node.kind === "array"
    ? "[]interface {}"
    : node.kind === "object"
    ? "map[string]interface {}"
    : "%!s(<nil>)";
  state.error = `Unsupported type: '${goType}'`;
  return null;
});

/** `api.ThinkValue`: a boolean or one of the effort strings. */
const THINK = go.custom("api.ThinkValue", (node, state) => {
  if (node.kind === "bool") return node.value;
  if (node.kind === "null") return false; // json.Unmarshal(null, &b) succeeds
  if (node.kind === "string") {
    if (!["high", "medium", "low", "max"].includes(node.value)) {
      state.error = `invalid think value: "${node.value}" ` +
        `(must be "high", "medium", "low", "max", true, or false)`;
    }
    return node.value;
  }
  state.error =
    `think must be a boolean or string ("high", "medium", "low", "max", true, or false)`;
  return null;
});

/** An ordered map of arbitrary values (tool call arguments, Anthropic input). */
const ARGUMENTS = go.custom("api.ToolCallFunctionArguments", (node, state) => {
  if (node.kind === "null") return null;
  if (node.kind !== "object") {
    state.error = `json: cannot unmarshal ${
      nodeKindName(node)
    } into Go value of type map[string]interface {}`;
    return null;
  }
  return decodeAny(node, state);
});

const TOOL_CALL = go.struct("api.ToolCall", {
  id: go.string,
  function: go.struct("api.ToolCallFunction", {
    index: go.int,
    name: go.string,
    arguments: ARGUMENTS,
  }),
});

const MESSAGE_ALIAS = go.struct("api.Message", {
  role: go.string,
  content: go.string,
  thinking: go.string,
  images: go.slice(go.bytes),
  tool_calls: go.slice(TOOL_CALL),
  tool_name: go.string,
  tool_call_id: go.string,
});

/** `api.Message`: decoded fresh each time, role lower-cased. */
const MESSAGE = go.custom("api.Message", (node, state) => {
  const m = unmarshalNode(node, MESSAGE_ALIAS, state) as Record<
    string,
    GoValue
  >;
  return { ...m, role: String(m.role).toLowerCase() };
});

// Tool parameters are kept as free-form values: their inner types are not
// texts the gateway decides on.
const TOOL = go.struct("api.Tool", {
  type: go.string,
  items: go.any,
  function: go.struct("api.ToolFunction", {
    name: go.string,
    description: go.string,
    parameters: go.any,
  }),
});

const OPTIONS = go.map(go.any);

/** `api.GenerateRequest` (`POST /api/generate`). */
export const GENERATE_REQUEST: GoType = go.struct("GenerateRequest", {
  model: go.string,
  prompt: go.string,
  suffix: go.string,
  system: go.string,
  template: go.string,
  context: go.slice(go.int),
  stream: go.ptr(go.bool),
  raw: go.bool,
  format: go.raw,
  keep_alive: go.ptr(DURATION),
  images: go.slice(go.bytes),
  options: OPTIONS,
  think: go.ptr(THINK),
  truncate: go.ptr(go.bool),
  shift: go.ptr(go.bool),
  _debug_render_only: go.bool,
  logprobs: go.bool,
  top_logprobs: go.int,
});

/** `api.ChatRequest` (`POST /api/chat`). */
export const CHAT_REQUEST: GoType = go.struct("ChatRequest", {
  model: go.string,
  messages: go.slice(MESSAGE),
  stream: go.ptr(go.bool),
  format: go.raw,
  keep_alive: go.ptr(DURATION),
  tools: go.slice(TOOL),
  options: OPTIONS,
  think: go.ptr(THINK),
  truncate: go.ptr(go.bool),
  shift: go.ptr(go.bool),
  _debug_render_only: go.bool,
  logprobs: go.bool,
  top_logprobs: go.int,
});

/** `api.EmbedRequest` (`POST /api/embed`). */
export const EMBED_REQUEST: GoType = go.struct("EmbedRequest", {
  model: go.string,
  input: go.any,
  keep_alive: go.ptr(DURATION),
  truncate: go.ptr(go.bool),
  dimensions: go.int,
  options: OPTIONS,
});

/** `api.EmbeddingRequest` (`POST /api/embeddings`). */
export const EMBEDDING_REQUEST: GoType = go.struct("EmbeddingRequest", {
  model: go.string,
  prompt: go.string,
  keep_alive: go.ptr(DURATION),
  options: OPTIONS,
});

/** `api.CreateRequest` (`POST /api/create`). */
export const CREATE_REQUEST: GoType = go.struct("CreateRequest", {
  model: go.string,
  stream: go.ptr(go.bool),
  quantize: go.string,
  draft_quantize: go.string,
  from: go.string,
  remote_host: go.string,
  files: go.map(go.string),
  draft_files: go.map(go.string),
  adapters: go.map(go.string),
  template: go.string,
  license: go.any,
  system: go.string,
  parameters: go.map(go.any),
  messages: go.slice(MESSAGE),
  renderer: go.string,
  parser: go.string,
  requires: go.string,
  info: go.map(go.any),
  name: go.string,
  quantization: go.string,
});

/** `api.ShowRequest` (`POST /api/show`). */
export const SHOW_REQUEST: GoType = go.struct("ShowRequest", {
  model: go.string,
  system: go.string,
  template: go.string,
  verbose: go.bool,
  options: OPTIONS,
  name: go.string,
});

/** `api.PullRequest` / `api.PushRequest`. */
export const PULL_REQUEST: GoType = go.struct("PullRequest", {
  model: go.string,
  insecure: go.bool,
  username: go.string,
  password: go.string,
  stream: go.ptr(go.bool),
  name: go.string,
});

/** `api.DeleteRequest` (`DELETE /api/delete`). */
export const DELETE_REQUEST: GoType = go.struct("DeleteRequest", {
  model: go.string,
  name: go.string,
});

/** `api.CopyRequest` (`POST /api/copy`). */
export const COPY_REQUEST: GoType = go.struct("CopyRequest", {
  source: go.string,
  destination: go.string,
});

/** `api.WebSearchRequest` / `api.WebFetchRequest`. */
export const WEB_REQUEST: GoType = go.struct("WebRequest", {
  query: go.string,
  max_results: go.int,
  url: go.string,
});

// --- OpenAI compatibility (`openai` package) -------------------------------

const STREAM_OPTIONS = go.struct("openai.StreamOptions", {
  include_usage: go.bool,
});

const OPENAI_TOOL_CALL = go.struct("openai.ToolCall", {
  id: go.string,
  index: go.int,
  type: go.string,
  function: go.struct("openai.ToolCallFunction", {
    name: go.string,
    arguments: go.string,
  }),
});

/** `openai.ChatCompletionRequest` (`POST /v1/chat/completions`). */
export const CHAT_COMPLETION_REQUEST: GoType = go.struct(
  "ChatCompletionRequest",
  {
    model: go.string,
    messages: go.slice(go.struct("openai.Message", {
      role: go.string,
      content: go.any,
      reasoning: go.string,
      tool_calls: go.slice(OPENAI_TOOL_CALL),
      name: go.string,
      tool_call_id: go.string,
    })),
    stream: go.bool,
    stream_options: go.ptr(STREAM_OPTIONS),
    max_tokens: go.ptr(go.int),
    seed: go.ptr(go.int),
    stop: go.any,
    temperature: go.ptr(go.float64),
    frequency_penalty: go.ptr(go.float64),
    presence_penalty: go.ptr(go.float64),
    top_p: go.ptr(go.float64),
    response_format: go.ptr(go.struct("openai.ResponseFormat", {
      type: go.string,
      json_schema: go.ptr(go.struct("openai.JsonSchema", { schema: go.raw })),
    })),
    tools: go.slice(TOOL),
    reasoning: go.ptr(go.struct("openai.Reasoning", { effort: go.string })),
    reasoning_effort: go.ptr(go.string),
    logprobs: go.ptr(go.bool),
    top_logprobs: go.int,
    _debug_render_only: go.bool,
  },
);

/** `openai.CompletionRequest` (`POST /v1/completions`). */
export const COMPLETION_REQUEST: GoType = go.struct("CompletionRequest", {
  model: go.string,
  prompt: go.string,
  frequency_penalty: go.float32,
  max_tokens: go.ptr(go.int),
  presence_penalty: go.float32,
  seed: go.ptr(go.int),
  stop: go.any,
  stream: go.bool,
  stream_options: go.ptr(STREAM_OPTIONS),
  temperature: go.ptr(go.float32),
  top_p: go.float32,
  suffix: go.string,
  logprobs: go.ptr(go.int),
  _debug_render_only: go.bool,
});

/** `openai.EmbedRequest` (`POST /v1/embeddings`). */
export const OPENAI_EMBED_REQUEST: GoType = go.struct("openai.EmbedRequest", {
  input: go.any,
  model: go.string,
  dimensions: go.int,
  encoding_format: go.string,
});

// Responses API: items are read with json.Unmarshal into small structs.

const TYPE_ROLE = go.struct("typeField", { type: go.string, role: go.string });

/** A Responses content part, reduced to its type and text. */
function responsesContent(node: GoNode, state: DecodeState): GoValue {
  const t = unmarshalNode(node, TYPE_ROLE, state) as Record<string, GoValue>;
  if (state.error !== undefined) return null;
  switch (t.type) {
    case "input_text":
    case "output_text":
      return unmarshalNode(
        node,
        go.struct("openai.ResponsesTextContent", {
          type: go.string,
          text: go.string,
        }),
        state,
      );
    case "input_image":
      return unmarshalNode(
        node,
        go.struct("openai.ResponsesImageContent", {
          type: go.string,
          detail: go.string,
          file_id: go.string,
          image_url: go.string,
        }),
        state,
      );
    case "input_file":
      return unmarshalNode(
        node,
        go.struct("openai.ResponsesFileContent", {
          type: go.string,
          file_data: go.string,
          file_id: go.string,
          file_url: go.string,
          filename: go.string,
        }),
        state,
      );
    default:
      state.error = `unknown content type: ${t.type}`;
      return null;
  }
}

function responsesContentList(
  raw: GoValue,
  what: string,
  state: DecodeState,
): GoValue[] | undefined {
  const node = raw as GoNode | null;
  if (node === null) return undefined;
  if (node.kind === "null") return undefined; // Unmarshal(null, &s) succeeds
  if (node.kind !== "array") {
    state.error = `${what} must be a string or array: json: cannot unmarshal ` +
      `${nodeKindName(node)} into Go value of type []json.RawMessage`;
    return [];
  }
  const out: GoValue[] = [];
  for (let i = 0; i < node.items.length && state.error === undefined; i++) {
    const inner: DecodeState = {};
    out.push(responsesContent(node.items[i], inner));
    if (inner.error !== undefined) {
      state.error = `${what}[${i}]: ${inner.error}`;
    }
  }
  return out;
}

function responsesItem(node: GoNode, state: DecodeState): GoValue {
  const t = unmarshalNode(node, TYPE_ROLE, state) as Record<string, GoValue>;
  if (state.error !== undefined) return null;
  const itemType = t.type === "" && t.role !== "" ? "message" : t.type;
  switch (itemType) {
    case "message": {
      const aux = unmarshalNode(
        node,
        go.struct("aux", { type: go.string, role: go.string, content: go.raw }),
        state,
      ) as Record<string, GoValue>;
      const content = aux.content as GoNode | null;
      if (content?.kind === "string") {
        return {
          type: "message",
          role: aux.role,
          content: [{ type: "input_text", text: content.value }],
        };
      }
      return {
        type: "message",
        role: aux.role,
        content: responsesContentList(content, "content", state) ?? null,
      };
    }
    case "function_call_output": {
      const aux = unmarshalNode(
        node,
        go.struct("aux", {
          type: go.string,
          call_id: go.string,
          output: go.raw,
        }),
        state,
      ) as Record<string, GoValue>;
      const output = aux.output as GoNode | null;
      if (output?.kind === "string") {
        return { type: itemType, call_id: aux.call_id, output: output.value };
      }
      const parts = responsesContentList(output, "output", state) ?? [];
      const text = parts.map((p) =>
        p && typeof p === "object" && "text" in p ? String(p.text) : ""
      ).join("");
      return { type: itemType, call_id: aux.call_id, output: text };
    }
    case "function_call":
      return unmarshalNode(
        node,
        go.struct("openai.ResponsesFunctionCall", {
          id: go.string,
          type: go.string,
          call_id: go.string,
          name: go.string,
          arguments: go.string,
        }),
        state,
      );
    case "reasoning":
      return unmarshalNode(
        node,
        go.struct("openai.ResponsesReasoningInput", {
          id: go.string,
          type: go.string,
          summary: go.any,
          encrypted_content: go.string,
        }),
        state,
      );
    case "web_search_call":
      return unmarshalNode(node, go.map(go.any), state);
    default:
      state.error = itemType === ""
        ? "input item missing required 'type' field"
        : `unknown input item type: "${itemType}"`;
      return null;
  }
}

/** `openai.ResponsesInput`: a string, or an array of typed items. */
const RESPONSES_INPUT = go.custom("openai.ResponsesInput", (node, state) => {
  if (node.kind === "string") return { text: node.value, items: null };
  if (node.kind === "null") return { text: "", items: null };
  if (node.kind !== "array") {
    state.error = `input must be a string or array: json: cannot unmarshal ` +
      `${nodeKindName(node)} into Go value of type []json.RawMessage`;
    return { text: "", items: null };
  }
  const items: GoValue[] = [];
  for (let i = 0; i < node.items.length && state.error === undefined; i++) {
    const inner: DecodeState = {};
    items.push(responsesItem(node.items[i], inner));
    if (inner.error !== undefined) state.error = `input[${i}]: ${inner.error}`;
  }
  return { text: "", items };
});

/** `openai.ResponsesRequest` (`POST /v1/responses`). */
export const RESPONSES_REQUEST: GoType = go.struct("ResponsesRequest", {
  model: go.string,
  background: go.bool,
  conversation: go.raw,
  include: go.slice(go.string),
  input: RESPONSES_INPUT,
  instructions: go.string,
  max_output_tokens: go.ptr(go.int),
  reasoning: go.struct("openai.ResponsesReasoning", {
    effort: go.string,
    generate_summary: go.string,
    summary: go.string,
  }),
  temperature: go.ptr(go.float64),
  text: go.ptr(go.struct("openai.ResponsesText", { format: go.any })),
  top_p: go.ptr(go.float64),
  truncation: go.ptr(go.string),
  tools: go.slice(go.struct("openai.ResponsesTool", {
    type: go.string,
    name: go.string,
    description: go.string,
    strict: go.any,
    parameters: go.any,
  })),
  stream: go.ptr(go.bool),
});

// --- Anthropic compatibility (`anthropic` package) -------------------------

const CONTENT_BLOCK = go.struct("anthropic.ContentBlock", {
  type: go.string,
  text: go.ptr(go.string),
  citations: go.any,
  source: go.ptr(go.struct("anthropic.ImageSource", {
    type: go.string,
    media_type: go.string,
    data: go.string,
    url: go.string,
  })),
  id: go.string,
  name: go.string,
  input: ARGUMENTS,
  tool_use_id: go.string,
  content: go.any,
  is_error: go.bool,
  thinking: go.ptr(go.string),
  signature: go.string,
});

/** `anthropic.MessageParam`: content is a string or a list of blocks. */
const MESSAGE_PARAM = go.custom("anthropic.MessageParam", (node, state) => {
  const raw = unmarshalNode(
    node,
    go.struct("raw", { role: go.string, content: go.raw }),
    state,
  ) as Record<string, GoValue>;
  if (state.error !== undefined) return null;
  const content = raw.content as GoNode | null;
  if (content === null) {
    state.error = "unexpected end of JSON input";
    return null;
  }
  if (content.kind === "string" || content.kind === "null") {
    const text = content.kind === "string" ? content.value : "";
    return { role: raw.role, content: [{ type: "text", text }] };
  }
  const blocks = unmarshalNode(content, go.slice(CONTENT_BLOCK), state);
  return { role: raw.role, content: blocks };
});

/** `anthropic.MessagesRequest` (`POST /v1/messages`). */
export const MESSAGES_REQUEST: GoType = go.struct("MessagesRequest", {
  model: go.string,
  max_tokens: go.int,
  messages: go.slice(MESSAGE_PARAM),
  system: go.any,
  stream: go.bool,
  temperature: go.ptr(go.float64),
  top_p: go.ptr(go.float64),
  top_k: go.ptr(go.int),
  stop_sequences: go.slice(go.string),
  tools: go.slice(go.struct("anthropic.Tool", {
    type: go.string,
    name: go.string,
    description: go.string,
    input_schema: go.raw,
    max_uses: go.int,
  })),
  tool_choice: go.ptr(go.struct("anthropic.ToolChoice", {
    type: go.string,
    name: go.string,
    disable_parallel_tool_use: go.bool,
  })),
  thinking: go.ptr(go.struct("anthropic.ThinkingConfig", {
    type: go.string,
    budget_tokens: go.int,
  })),
  metadata: go.ptr(go.struct("anthropic.Metadata", { user_id: go.string })),
  output_config: go.ptr(go.struct("anthropic.OutputConfig", {
    effort: go.string,
  })),
});

// ---------------------------------------------------------------------------
// api.Options.FromMap

/** The integer options of `api.Options` (the rest are floats, bools, lists). */
const INT_OPTIONS = new Set([
  "num_keep",
  "seed",
  "num_predict",
  "top_k",
  "repeat_last_n",
  "num_ctx",
  "num_batch",
  "num_gpu",
  "main_gpu",
  "num_thread",
  "draft_num_predict",
]);

/**
 * Reads one integer option as `api.Options.FromMap` does: exact key, `null`
 * skipped, any number truncated toward zero, anything else an error.
 * Returns `undefined` when the option is absent or null.
 */
export function intOption(
  options: GoValue,
  key: string,
): { value?: number; error?: string } {
  if (!INT_OPTIONS.has(key)) throw new RangeError(`${key}: not an int option`);
  if (!(options instanceof Map)) return {};
  const v = options.get(key);
  if (v === undefined || v === null) return {};
  if (typeof v !== "number") {
    return { error: `option "${key}" must be of type integer` };
  }
  // Go's int64(float64) for out-of-range values yields MinInt64 on amd64.
  if (Math.abs(v) >= 2 ** 63) return { value: -(2 ** 63) };
  return { value: Math.trunc(v) };
}

/** Checks every known option's type like `FromMap`; returns Go's error. */
export function checkOptions(options: GoValue): string | undefined {
  if (!(options instanceof Map)) return undefined;
  const floats = new Set([
    "top_p",
    "min_p",
    "typical_p",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
  ]);
  for (const [key, v] of options) {
    if (v === null) continue;
    if (INT_OPTIONS.has(key) && typeof v !== "number") {
      return `option "${key}" must be of type integer`;
    }
    if (floats.has(key) && typeof v !== "number") {
      return `option "${key}" must be of type float32`;
    }
    if (key === "use_mmap" && typeof v !== "boolean") {
      return `option "${key}" must be of type boolean`;
    }
    if (key === "stop") {
      if (!Array.isArray(v)) return `option "${key}" must be of type array`;
      if (v.some((s) => typeof s !== "string")) {
        return `option "${key}" must be of an array of strings`;
      }
    }
  }
  return undefined;
}
