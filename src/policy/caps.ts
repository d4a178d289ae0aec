/**
 * Generation and context caps (`max_predict`, `max_ctx`), applied to the
 * field Ollama reads, read the way Ollama reads it. See
 * `shared/ollama-api.md` §1 and §4.
 *
 * - Native routes: `options.num_predict` and `options.num_ctx`. `options` is
 *   a struct field (any case, `Options`), its keys are exact. Ollama reads
 *   an integer option from any JSON number and truncates it toward zero
 *   (`4096.9` is 4096); another type is a 400 from Ollama, refused here too.
 *   A `num_predict` that is absent, `null` or truncates to 0 or less means
 *   "no limit" to Ollama (negative: open-ended; 0 is dropped before it
 *   reaches the runner), so the cap is written in.
 * - `/v1/chat/completions`, `/v1/completions`, `/v1/messages`: `max_tokens`;
 *   `/v1/responses`: `max_output_tokens`. These are Go integers: a number
 *   with a fraction or an exponent, or beyond 64 bits, is a 400 from Ollama
 *   and refused here. Ollama copies the value to `num_predict`, so 0 or a
 *   negative value means no limit and the cap is written in.
 *   `max_completion_tokens` is not read by Ollama and is left as sent. The
 *   context size cannot be set on these routes, so `maxCtx` does not apply.
 *
 * A rewritten body has exactly one key for each field set, spelled as Ollama
 * documents it, and no other key Go would read into that field.
 *
 * @module
 */

import type { CapMode } from "../config/policy.ts";
import type { CapField } from "../routes/table.ts";
import type { JsonNode } from "../request/go_json.ts";
import {
  getField,
  getMapEntry,
  setField,
  setMapEntry,
} from "../request/go_fields.ts";

/** The caps in force for a request (the tightest of every policy). */
export interface CapLimits {
  /** Cap on generated tokens; undefined: none. */
  maxPredict?: number;
  /** Cap on `options.num_ctx` (native routes only); undefined: none. */
  maxCtx?: number;
  /** Over the cap: refuse the request, or lower the value to the cap. */
  capMode: CapMode;
}

/** What to forward after the caps, or why the request is refused (400). */
export type CapResult =
  /** Forward the original bytes. */
  | { kind: "unchanged" }
  /** Forward `serializeJson(body)`; `changes` describe each rewrite. */
  | { kind: "rewritten"; body: JsonNode; changes: string[] }
  /** Refuse with 400; `value` is the offending value as sent (shortened). */
  | {
    kind: "refused";
    field: string;
    value: string;
    cap: number;
    message: string;
  };

/** Options of {@linkcode applyCaps}. */
export interface ApplyCapsOptions {
  /** Where the route's generation cap lives (from the route table). */
  capField: CapField;
  limits: CapLimits;
}

type Refused = Extract<CapResult, { kind: "refused" }>;

const INT64_LIMIT = 2n ** 63n;
const GO_INTEGER = /^-?(?:0|[1-9][0-9]*)$/;
const MAX_SHOWN_VALUE = 32;

/**
 * Applies `max_predict` and `max_ctx` to a request body on a route whose cap
 * field is `capField`.
 *
 * @throws {FieldConflictError} when keys Go reads into one field (such as
 * `options` and `Options`, or two `num_predict` keys) carry different values.
 * @throws {RangeError} when a cap is not a positive integer.
 *
 * @example
 * ```ts
 * const result = applyCaps(body, {
 *   capField: "options.num_predict",
 *   limits: { maxPredict: 512, capMode: "refuse" },
 * });
 * if (result.kind === "rewritten") forward(serializeJson(result.body));
 * ```
 */
export function applyCaps(
  body: JsonNode,
  options: ApplyCapsOptions,
): CapResult {
  const { capField, limits } = options;
  assertCap("maxPredict", limits.maxPredict);
  assertCap("maxCtx", limits.maxCtx);

  if (capField === "options.num_predict") return capNativeOptions(body, limits);
  if (limits.maxPredict === undefined) return { kind: "unchanged" };
  return capTopLevelInteger(body, {
    field: capField,
    cap: limits.maxPredict,
    capMode: limits.capMode,
  });
}

function capNativeOptions(body: JsonNode, limits: CapLimits): CapResult {
  const { maxPredict, maxCtx, capMode } = limits;
  if (maxPredict === undefined && maxCtx === undefined) {
    return { kind: "unchanged" };
  }

  // 1. The options map Go decodes: null or absent is an empty map. Case
  // variants (`Options`) that differ were refused by getField: Go would
  // merge them key by key, not take the last.
  const found = getField(body, "options");
  if (found !== undefined && found.kind !== "null" && found.kind !== "object") {
    return refused({
      field: "options",
      value: found,
      cap: (maxPredict ?? maxCtx)!,
      message: `options must be an object, got ${describeKind(found)}`,
    });
  }
  const original = found?.kind === "object" ? found : undefined;
  let options: JsonNode = original ?? { kind: "object", entries: [] };
  const changes: string[] = [];

  // 2. num_predict: no limit (absent, null, 0 or negative) gets the cap.
  if (maxPredict !== undefined) {
    const field = "options.num_predict";
    const entry = original && getMapEntry(original, "num_predict", "options");
    const read = readOptionInteger(entry, field, maxPredict);
    if (read.kind === "refused") return read;
    if (read.kind === "absent" || read.value <= 0) {
      options = setMapEntry(options, "num_predict", numberNode(maxPredict));
      changes.push(`${field} set to ${maxPredict} (was ${shown(entry)})`);
    } else if (read.value > maxPredict) {
      if (capMode === "refuse") {
        return overCap(field, entry!, maxPredict);
      }
      options = setMapEntry(options, "num_predict", numberNode(maxPredict));
      changes.push(`${field} ${shown(entry)} lowered to ${maxPredict}`);
    }
  }

  // 3. num_ctx: absent means the server's default and stays absent.
  if (maxCtx !== undefined) {
    const field = "options.num_ctx";
    const entry = original && getMapEntry(original, "num_ctx", "options");
    const read = readOptionInteger(entry, field, maxCtx);
    if (read.kind === "refused") return read;
    if (read.kind === "integer" && read.value > maxCtx) {
      if (capMode === "refuse") return overCap(field, entry!, maxCtx);
      options = setMapEntry(options, "num_ctx", numberNode(maxCtx));
      changes.push(`${field} ${shown(entry)} lowered to ${maxCtx}`);
    }
  }

  if (changes.length === 0) return { kind: "unchanged" };
  return {
    kind: "rewritten",
    body: setField(body, "options", options),
    changes,
  };
}

function capTopLevelInteger(
  body: JsonNode,
  options: { field: string; cap: number; capMode: CapMode },
): CapResult {
  const { field, cap, capMode } = options;
  const entry = getField(body, field);

  if (entry !== undefined && entry.kind !== "null") {
    if (entry.kind !== "number" || !GO_INTEGER.test(entry.raw)) {
      return refused({
        field,
        value: entry,
        cap,
        message: `${field} must be an integer, got ${describeKind(entry)}`,
      });
    }
    const value = BigInt(entry.raw);
    if (value >= INT64_LIMIT || value < -INT64_LIMIT) {
      return refused({
        field,
        value: entry,
        cap,
        message: `${field} ${shown(entry)} is outside the 64-bit integer range`,
      });
    }
    if (value > 0n && value <= BigInt(cap)) return { kind: "unchanged" };
    if (value > 0n) {
      if (capMode === "refuse") return overCap(field, entry, cap);
      return {
        kind: "rewritten",
        body: setField(body, field, numberNode(cap)),
        changes: [`${field} ${shown(entry)} lowered to ${cap}`],
      };
    }
  }

  return {
    kind: "rewritten",
    body: setField(body, field, numberNode(cap)),
    changes: [`${field} set to ${cap} (was ${shown(entry)})`],
  };
}

/**
 * Reads an integer option as Ollama's `Options.FromMap` does: `null` is
 * skipped, any JSON number is truncated toward zero, anything else is an
 * error. Values whose truncation leaves the int64 range (where Go's
 * conversion is platform-defined) are refused.
 */
function readOptionInteger(
  entry: JsonNode | undefined,
  field: string,
  cap: number,
): { kind: "absent" } | { kind: "integer"; value: number } | Refused {
  if (entry === undefined || entry.kind === "null") return { kind: "absent" };
  if (entry.kind !== "number") {
    return refused({
      field,
      value: entry,
      cap,
      message: `${field} must be a number, got ${describeKind(entry)}`,
    });
  }
  const value = Math.trunc(entry.value);
  if (!Number.isFinite(value) || value >= 2 ** 63 || value < -(2 ** 63)) {
    return refused({
      field,
      value: entry,
      cap,
      message:
        `${field} ${
          shown(entry)
        } is outside the 64-bit integer range as Ollama reads options ` +
        `(a floating-point number, which rounds values this large up to 2^63)`,
    });
  }
  return { kind: "integer", value };
}

function overCap(field: string, entry: JsonNode, cap: number): Refused {
  return refused({
    field,
    value: entry,
    cap,
    message: `${field} ${shown(entry)} exceeds this client's cap of ${cap}`,
  });
}

function refused(
  parts: { field: string; value: JsonNode; cap: number; message: string },
): Refused {
  return {
    kind: "refused",
    field: parts.field,
    value: shown(parts.value),
    cap: parts.cap,
    message: parts.message,
  };
}

function assertCap(name: string, cap: number | undefined): void {
  if (cap === undefined) return;
  if (!Number.isSafeInteger(cap) || cap < 1) {
    throw new RangeError(
      `${name}: ${cap} is not allowed; use an integer of 1 or more`,
    );
  }
}

function numberNode(value: number): JsonNode {
  return { kind: "number", raw: String(value), value };
}

/**
 * The value as sent, for messages: numbers (shortened) and literals. A
 * string's content is not echoed: it could be anything the client pasted.
 */
function shown(node: JsonNode | undefined): string {
  if (node === undefined) return "absent";
  switch (node.kind) {
    case "number":
      return shorten(node.raw);
    case "string":
      return "a string";
    case "bool":
      return String(node.value);
    case "null":
      return "null";
    default:
      return describeKind(node);
  }
}

function describeKind(node: JsonNode): string {
  switch (node.kind) {
    case "object":
      return "an object";
    case "array":
      return "an array";
    case "string":
      return "a string";
    case "number":
      return `the number ${shown(node)}`;
    case "bool":
      return `the boolean ${node.value}`;
    case "null":
      return "null";
  }
}

function shorten(text: string): string {
  return text.length > MAX_SHOWN_VALUE
    ? `${text.slice(0, MAX_SHOWN_VALUE)}…`
    : text;
}
