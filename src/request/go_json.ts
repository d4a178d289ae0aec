/**
 * A strict JSON parser that keeps what `JSON.parse` throws away: every object
 * key in document order, duplicates and case variants included. Ollama reads
 * bodies with Go's `encoding/json`, which matches keys to struct fields
 * case-insensitively and lets the last one win; Butler can only decide on
 * the same value if it sees every key.
 *
 * The parser is stricter than Go where Go is lenient, so a body Butler accepts
 * is read the same way by both: Go replaces invalid UTF-8 and lone surrogate
 * escapes with U+FFFD and (through `json.Decoder`) ignores data after the
 * first value; here those are syntax errors.
 *
 * @module
 */

/** One JSON value, with object entries kept in order and duplicates kept. */
export type JsonNode =
  | { kind: "object"; entries: Array<[key: string, value: JsonNode]> }
  | { kind: "array"; items: JsonNode[] }
  | { kind: "string"; value: string }
  | { kind: "number"; raw: string; value: number }
  | { kind: "bool"; value: boolean }
  | { kind: "null" };

/** A body that is not one well-formed JSON document; the message names the byte offset. */
export class JsonSyntaxError extends Error {
  /** Byte offset in the document where the problem was found. */
  readonly offset: number;

  /** Builds the error; `what` says what was wrong. */
  constructor(what: string, offset: number) {
    super(`invalid JSON: ${what} at byte ${offset}`);
    this.name = "JsonSyntaxError";
    this.offset = offset;
  }
}

const DEFAULT_MAX_DEPTH = 64;

// Strings shorter than this that are pure ASCII are built with
// String.fromCharCode: a TextDecoder call costs more than it saves there.
const SHORT_STRING = 24;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Parses UTF-8 bytes as exactly one JSON document (RFC 8259), strictly.
 *
 * Refused with {@linkcode JsonSyntaxError}: invalid UTF-8, a lone surrogate
 * escape such as `"\ud800"`, anything but white space after the value
 * (`{}{}` included), a leading byte-order mark, and nesting deeper than
 * `maxDepth` objects/arrays (default 64).
 *
 * @example
 * ```ts
 * const node = parseJsonAsGo(new TextEncoder().encode('{"a":1,"A":2}'));
 * // node.kind === "object", node.entries has both keys
 * ```
 */
export function parseJsonAsGo(
  bytes: Uint8Array,
  options: { maxDepth?: number } = {},
): JsonNode {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
  if (!Number.isInteger(maxDepth) || maxDepth < 1) {
    throw new RangeError(
      `maxDepth: ${maxDepth} is not allowed; use an integer of 1 or more`,
    );
  }

  const parser = new Parser(bytes, maxDepth);
  parser.skipWhitespace();
  const node = parser.parseValue(0);
  parser.skipWhitespace();
  if (parser.pos < bytes.length) {
    throw new JsonSyntaxError(
      `${describeByte(bytes[parser.pos])} after the top-level value`,
      parser.pos,
    );
  }
  return node;
}

/**
 * Serializes a node back to compact JSON: numbers as their source text,
 * strings and keys escaped by `JSON.stringify`, duplicate keys kept.
 *
 * @example
 * ```ts
 * serializeJson({ kind: "number", raw: "1e400", value: Infinity }); // "1e400"
 * ```
 */
export function serializeJson(node: JsonNode): string {
  const parts: string[] = [];
  writeNode(node, parts);
  return parts.join("");
}

function writeNode(node: JsonNode, parts: string[]): void {
  switch (node.kind) {
    case "object": {
      parts.push("{");
      node.entries.forEach(([key, value], index) => {
        if (index > 0) parts.push(",");
        parts.push(JSON.stringify(key), ":");
        writeNode(value, parts);
      });
      parts.push("}");
      return;
    }
    case "array": {
      parts.push("[");
      node.items.forEach((item, index) => {
        if (index > 0) parts.push(",");
        writeNode(item, parts);
      });
      parts.push("]");
      return;
    }
    case "string":
      parts.push(JSON.stringify(node.value));
      return;
    case "number":
      parts.push(node.raw);
      return;
    case "bool":
      parts.push(node.value ? "true" : "false");
      return;
    case "null":
      parts.push("null");
      return;
  }
}

function describeByte(byte: number | undefined): string {
  if (byte === undefined) return "unexpected end of input";
  if (byte >= 0x20 && byte < 0x7f) {
    return `unexpected character '${String.fromCharCode(byte)}'`;
  }
  return `unexpected byte 0x${byte.toString(16).padStart(2, "0")}`;
}

/** Writes `codePoint` as UTF-8 at `at`; returns the new length. */
function writeUtf8(out: Uint8Array, at: number, codePoint: number): number {
  if (codePoint < 0x80) {
    out[at] = codePoint;
    return at + 1;
  }
  if (codePoint < 0x800) {
    out[at] = 0xc0 | (codePoint >> 6);
    out[at + 1] = 0x80 | (codePoint & 0x3f);
    return at + 2;
  }
  if (codePoint < 0x10000) {
    out[at] = 0xe0 | (codePoint >> 12);
    out[at + 1] = 0x80 | ((codePoint >> 6) & 0x3f);
    out[at + 2] = 0x80 | (codePoint & 0x3f);
    return at + 3;
  }
  out[at] = 0xf0 | (codePoint >> 18);
  out[at + 1] = 0x80 | ((codePoint >> 12) & 0x3f);
  out[at + 2] = 0x80 | ((codePoint >> 6) & 0x3f);
  out[at + 3] = 0x80 | (codePoint & 0x3f);
  return at + 4;
}

function isDigit(byte: number): boolean {
  return byte >= 0x30 && byte <= 0x39;
}

function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x61 + 10;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x41 + 10;
  return -1;
}

class Parser {
  readonly #bytes: Uint8Array;
  readonly #maxDepth: number;
  pos = 0;

  constructor(bytes: Uint8Array, maxDepth: number) {
    this.#bytes = bytes;
    this.#maxDepth = maxDepth;
  }

  skipWhitespace(): void {
    const bytes = this.#bytes;
    let pos = this.pos;
    while (pos < bytes.length) {
      const byte = bytes[pos];
      if (byte !== 0x20 && byte !== 0x0a && byte !== 0x0d && byte !== 0x09) {
        break;
      }
      pos++;
    }
    this.pos = pos;
  }

  parseValue(depth: number): JsonNode {
    const byte = this.#bytes[this.pos];
    switch (byte) {
      case 0x7b: // {
        return this.#parseObject(depth + 1);
      case 0x5b: // [
        return this.#parseArray(depth + 1);
      case QUOTE:
        return { kind: "string", value: this.#parseString() };
      case 0x74: // t
        this.#expectLiteral("true");
        return { kind: "bool", value: true };
      case 0x66: // f
        this.#expectLiteral("false");
        return { kind: "bool", value: false };
      case 0x6e: // n
        this.#expectLiteral("null");
        return { kind: "null" };
      default:
        if (byte === 0x2d || (byte !== undefined && isDigit(byte))) {
          return this.#parseNumber();
        }
        if (byte === 0xef && this.pos === 0) {
          throw new JsonSyntaxError("byte-order mark before the value", 0);
        }
        throw new JsonSyntaxError(
          `${describeByte(byte)} looking for the beginning of a value`,
          this.pos,
        );
    }
  }

  #checkDepth(depth: number): void {
    if (depth > this.#maxDepth) {
      throw new JsonSyntaxError(
        `nesting deeper than ${this.#maxDepth} objects/arrays`,
        this.pos,
      );
    }
  }

  #expect(byte: number, context: string): void {
    if (this.#bytes[this.pos] !== byte) {
      throw new JsonSyntaxError(
        `${describeByte(this.#bytes[this.pos])} ${context}`,
        this.pos,
      );
    }
    this.pos++;
  }

  #parseObject(depth: number): JsonNode {
    this.#checkDepth(depth);
    this.pos++; // {
    const entries: Array<[string, JsonNode]> = [];
    this.skipWhitespace();
    if (this.#bytes[this.pos] === 0x7d) {
      this.pos++;
      return { kind: "object", entries };
    }

    for (;;) {
      if (this.#bytes[this.pos] !== QUOTE) {
        throw new JsonSyntaxError(
          `${
            describeByte(this.#bytes[this.pos])
          } looking for the beginning of an object key`,
          this.pos,
        );
      }
      const key = this.#parseString();
      this.skipWhitespace();
      this.#expect(0x3a, "after an object key (expected ':')");
      this.skipWhitespace();
      entries.push([key, this.parseValue(depth)]);
      this.skipWhitespace();
      const next = this.#bytes[this.pos];
      if (next === 0x2c) {
        this.pos++;
        this.skipWhitespace();
        continue;
      }
      this.#expect(0x7d, "after an object value (expected ',' or '}')");
      return { kind: "object", entries };
    }
  }

  #parseArray(depth: number): JsonNode {
    this.#checkDepth(depth);
    this.pos++; // [
    const items: JsonNode[] = [];
    this.skipWhitespace();
    if (this.#bytes[this.pos] === 0x5d) {
      this.pos++;
      return { kind: "array", items };
    }

    for (;;) {
      items.push(this.parseValue(depth));
      this.skipWhitespace();
      const next = this.#bytes[this.pos];
      if (next === 0x2c) {
        this.pos++;
        this.skipWhitespace();
        continue;
      }
      this.#expect(0x5d, "after an array element (expected ',' or ']')");
      return { kind: "array", items };
    }
  }

  #expectLiteral(word: string): void {
    for (let i = 0; i < word.length; i++) {
      if (this.#bytes[this.pos + i] !== word.charCodeAt(i)) {
        throw new JsonSyntaxError(
          `${describeByte(this.#bytes[this.pos + i])} in literal ${word}`,
          this.pos + i,
        );
      }
    }
    this.pos += word.length;
  }

  #parseNumber(): JsonNode {
    const bytes = this.#bytes;
    const start = this.pos;
    let pos = start;

    if (bytes[pos] === 0x2d) pos++;
    if (bytes[pos] === 0x30) {
      pos++;
    } else if (bytes[pos] !== undefined && isDigit(bytes[pos])) {
      while (pos < bytes.length && isDigit(bytes[pos])) pos++;
    } else {
      throw new JsonSyntaxError(
        `${describeByte(bytes[pos])} in numeric literal`,
        pos,
      );
    }

    if (bytes[pos] === 0x2e) {
      pos++;
      if (!(pos < bytes.length && isDigit(bytes[pos]))) {
        throw new JsonSyntaxError(
          `${describeByte(bytes[pos])} after decimal point in numeric literal`,
          pos,
        );
      }
      while (pos < bytes.length && isDigit(bytes[pos])) pos++;
    }

    if (bytes[pos] === 0x65 || bytes[pos] === 0x45) {
      pos++;
      if (bytes[pos] === 0x2b || bytes[pos] === 0x2d) pos++;
      if (!(pos < bytes.length && isDigit(bytes[pos]))) {
        throw new JsonSyntaxError(
          `${describeByte(bytes[pos])} in exponent of numeric literal`,
          pos,
        );
      }
      while (pos < bytes.length && isDigit(bytes[pos])) pos++;
    }

    this.pos = pos;
    const raw = this.#decodeRun(start, pos, true);
    return { kind: "number", raw, value: Number(raw) };
  }

  /** Parses a string starting at the opening quote; leaves pos after the closing one. */
  #parseString(): string {
    const bytes = this.#bytes;
    const start = this.pos + 1;
    let pos = start;
    let ascii = true;

    // Fast path: scan to the closing quote; most strings have no escapes.
    for (;;) {
      if (pos >= bytes.length) {
        throw new JsonSyntaxError("unterminated string", pos);
      }
      const byte = bytes[pos];
      if (byte === QUOTE) break;
      if (byte === BACKSLASH) return this.#parseEscapedString(start, pos);
      if (byte < 0x20) {
        throw new JsonSyntaxError(
          `control character 0x${
            byte.toString(16).padStart(2, "0")
          } in string literal`,
          pos,
        );
      }
      if (byte >= 0x80) ascii = false;
      pos++;
    }

    this.pos = pos + 1;
    return this.#decodeRun(start, pos, ascii);
  }

  #decodeRun(start: number, end: number, ascii: boolean): string {
    const bytes = this.#bytes;
    if (ascii && end - start < SHORT_STRING) {
      return String.fromCharCode.apply(
        null,
        bytes.subarray(start, end) as unknown as number[],
      );
    }
    try {
      return utf8.decode(bytes.subarray(start, end));
    } catch {
      throw new JsonSyntaxError(
        "invalid UTF-8 in string literal",
        this.#firstInvalidUtf8(start, end),
      );
    }
  }

  /** Locates the first byte of an invalid UTF-8 sequence (for the error message). */
  #firstInvalidUtf8(start: number, end: number): number {
    let low = start;
    let high = end;
    // The shortest prefix that fails to decode ends inside the bad sequence.
    while (high - low > 1) {
      const mid = (low + high) >>> 1;
      // A fresh decoder per probe: a prefix may end inside a sequence.
      const probe = new TextDecoder("utf-8", { fatal: true });
      try {
        probe.decode(this.#bytes.subarray(start, mid), { stream: true });
        low = mid;
      } catch {
        high = mid;
      }
    }
    return low;
  }

  /**
   * Slow path for a string containing escapes; `firstEscape` is the first
   * backslash. Escapes never take more bytes decoded than written, so the
   * unescaped UTF-8 fits in a buffer the size of the literal, decoded once.
   */
  #parseEscapedString(start: number, firstEscape: number): string {
    const bytes = this.#bytes;
    const end = this.#findStringEnd(firstEscape);
    const out = new Uint8Array(end - start);
    out.set(bytes.subarray(start, firstEscape));
    let length = firstEscape - start;
    let pos = firstEscape;

    while (pos < end) {
      const byte = bytes[pos];
      if (byte !== BACKSLASH) {
        out[length++] = byte;
        pos++;
        continue;
      }
      const [codePoint, next] = this.#readEscape(pos);
      length = writeUtf8(out, length, codePoint);
      pos = next;
    }

    this.pos = end + 1;
    try {
      return utf8.decode(out.subarray(0, length));
    } catch {
      throw new JsonSyntaxError(
        "invalid UTF-8 in string literal",
        this.#firstInvalidUtf8(start, end),
      );
    }
  }

  /** The offset of the closing quote, checking for control characters. */
  #findStringEnd(from: number): number {
    const bytes = this.#bytes;
    let pos = from;
    for (;;) {
      if (pos >= bytes.length) {
        throw new JsonSyntaxError("unterminated string", pos);
      }
      const byte = bytes[pos];
      if (byte === QUOTE) return pos;
      if (byte === BACKSLASH) {
        pos += 2;
        continue;
      }
      if (byte < 0x20) {
        throw new JsonSyntaxError(
          `control character 0x${
            byte.toString(16).padStart(2, "0")
          } in string literal`,
          pos,
        );
      }
      pos++;
    }
  }

  /** Reads the escape at `pos` (a backslash); returns its code point and the next position. */
  #readEscape(pos: number): [number, number] {
    const bytes = this.#bytes;
    const code = bytes[pos + 1];
    switch (code) {
      case 0x22: // "
      case 0x5c: // \
      case 0x2f: // /
        return [code, pos + 2];
      case 0x62:
        return [0x08, pos + 2];
      case 0x66:
        return [0x0c, pos + 2];
      case 0x6e:
        return [0x0a, pos + 2];
      case 0x72:
        return [0x0d, pos + 2];
      case 0x74:
        return [0x09, pos + 2];
      case 0x75: {
        const unit = this.#readHex4(pos + 2);
        if (unit >= 0xdc00 && unit <= 0xdfff) {
          throw new JsonSyntaxError(
            `lone low surrogate \\u${unit.toString(16)} in string escape`,
            pos,
          );
        }
        if (unit < 0xd800 || unit > 0xdbff) return [unit, pos + 6];
        if (bytes[pos + 6] !== BACKSLASH || bytes[pos + 7] !== 0x75) {
          throw new JsonSyntaxError(
            `lone high surrogate \\u${unit.toString(16)} in string escape`,
            pos,
          );
        }
        const low = this.#readHex4(pos + 8);
        if (low < 0xdc00 || low > 0xdfff) {
          throw new JsonSyntaxError(
            `lone high surrogate \\u${unit.toString(16)} in string escape`,
            pos,
          );
        }
        return [0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00), pos + 12];
      }
      default:
        throw new JsonSyntaxError(
          `invalid escape ${describeByte(code)} in string literal`,
          pos + 1,
        );
    }
  }

  #readHex4(pos: number): number {
    let value = 0;
    for (let i = 0; i < 4; i++) {
      const digit = hexValue(this.#bytes[pos + i] ?? -1);
      if (digit < 0) {
        throw new JsonSyntaxError(
          `${describeByte(this.#bytes[pos + i])} in \\u escape`,
          pos + i,
        );
      }
      value = value * 16 + digit;
    }
    return value;
  }
}
