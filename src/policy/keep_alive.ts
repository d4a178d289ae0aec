/**
 * `keep_alive` on the native routes that load a model (`/api/generate`,
 * `/api/chat`, `/api/embed`, `/api/embeddings`): how long Ollama keeps the
 * model in memory after the request. The OpenAI- and Anthropic-compatible
 * routes have no such field (Ollama's compatibility layer never sets it).
 *
 * Ollama's `api.Duration` reads:
 *
 * - a JSON number as seconds (fractions allowed); negative means forever;
 * - a JSON string with Go's `time.ParseDuration` (`"5m"`, `"1h30m"`,
 *   `".5s"`, `"0"`); negative means forever; anything it cannot parse is a
 *   400;
 * - `null` as absent (the server default, `OLLAMA_KEEP_ALIVE`);
 * - any other type as a 400.
 *
 * A duration of zero (`0`, `"0s"`, `-0`, or a number of seconds so small it
 * is 0 ns) unloads the model: after the request, or at once when the prompt
 * or `messages` is empty. A positive duration under a second (`"1ns"`,
 * `1e-9`) unloads it just the same a moment later, so Butler treats every
 * keep_alive under {@linkcode UNLOAD_BELOW_SECONDS} as unloading. A number of seconds too large for Go's int64
 * nanoseconds converts to a platform-defined value (negative on amd64,
 * which also unloads), so it is refused as unreadable.
 *
 * @module
 */

import type { CapMode } from "../config/policy.ts";
import type { JsonNode } from "../request/go_json.ts";
import { getField, setField } from "../request/go_fields.ts";

/** What to forward after the keep_alive rule, or why it is refused. */
export type KeepAliveResult =
  /** Forward the body as read. */
  | { kind: "unchanged" }
  /** Forward `serializeJson(body)`: `keep_alive` lowered to the cap. */
  | { kind: "rewritten"; body: JsonNode }
  /** Refuse; `reason` is the stable code for logs and metrics. */
  | {
    kind: "refused";
    message: string;
    reason:
      | "keep_alive_over_cap"
      | "unload_needs_management"
      | "bad_keep_alive";
  };

/** Options of {@linkcode applyKeepAlive}. */
export interface ApplyKeepAliveOptions {
  /** Longest keep_alive allowed, in seconds; undefined: no cap. */
  maxKeepAliveSeconds?: number;
  /** Over the cap (or forever): refuse, or lower to the cap. */
  capMode: CapMode;
  /** The caller may unload models (keep_alive of zero). */
  allowManagement: boolean;
}

/** How long Ollama keeps the model loaded, as it reads `keep_alive`. */
type KeepAlive =
  | { kind: "forever" }
  | { kind: "duration"; nanoseconds: bigint }
  | { kind: "unreadable"; why: string };

const NS_PER_SECOND = 1_000_000_000;

/**
 * A keep_alive shorter than this many seconds counts as unloading the model:
 * it is gone before anyone else could use it.
 */
export const UNLOAD_BELOW_SECONDS = 1;
const UNLOAD_BELOW_NS = BigInt(UNLOAD_BELOW_SECONDS * NS_PER_SECOND);
const INT64_LIMIT = 2n ** 63n;
const UNIT_NANOSECONDS: Readonly<Record<string, bigint>> = {
  "ns": 1n,
  "us": 1_000n,
  "\u00b5s": 1_000n, // micro sign
  "\u03bcs": 1_000n, // Greek small mu
  "ms": 1_000_000n,
  "s": 1_000_000_000n,
  "m": 60_000_000_000n,
  "h": 3_600_000_000_000n,
};
const MAX_SHOWN_VALUE = 32;

/**
 * Applies the keep_alive rules to a native request body: a zero duration or
 * one under a second (unload) needs `allowManagement`; forever or longer than
 * `maxKeepAliveSeconds` is refused or lowered to the cap; a value Ollama
 * cannot read is refused.
 *
 * @throws {FieldConflictError} when case variants of `keep_alive` disagree.
 * @throws {RangeError} when `maxKeepAliveSeconds` is not a positive number.
 *
 * @example
 * ```ts
 * const result = applyKeepAlive(body, {
 *   maxKeepAliveSeconds: 600,
 *   capMode: "clamp",
 *   allowManagement: false,
 * });
 * ```
 */
export function applyKeepAlive(
  body: JsonNode,
  options: ApplyKeepAliveOptions,
): KeepAliveResult {
  const cap = options.maxKeepAliveSeconds;
  if (cap !== undefined && !(Number.isFinite(cap) && cap > 0)) {
    throw new RangeError(
      `maxKeepAliveSeconds: ${cap} is not allowed; use a positive number of seconds`,
    );
  }

  // 1. What Ollama reads; null or absent leaves the server default.
  const node = getField(body, "keep_alive");
  if (node === undefined || node.kind === "null") return { kind: "unchanged" };
  const keepAlive = readKeepAlive(node);
  if (keepAlive.kind === "unreadable") {
    return {
      kind: "refused",
      reason: "bad_keep_alive",
      message: `keep_alive ${shown(node)} is not a duration Ollama accepts: ` +
        `${keepAlive.why}; send seconds or a duration such as "5m"`,
    };
  }

  // 2. Zero unloads the model, and so, a moment later, does anything under
  // a second.
  if (
    keepAlive.kind === "duration" && keepAlive.nanoseconds < UNLOAD_BELOW_NS
  ) {
    if (options.allowManagement) return { kind: "unchanged" };
    return {
      kind: "refused",
      reason: "unload_needs_management",
      message: `keep_alive ${shown(node)} unloads the model${
        keepAlive.nanoseconds === 0n
          ? ""
          : ` (anything under ${UNLOAD_BELOW_SECONDS} s does)`
      }, which needs the allow_management permission`,
    };
  }

  // 3. The cap: forever is over any cap.
  if (cap === undefined) return { kind: "unchanged" };
  const capNanoseconds = BigInt(Math.floor(cap * NS_PER_SECOND));
  if (
    keepAlive.kind === "duration" && keepAlive.nanoseconds <= capNanoseconds
  ) {
    return { kind: "unchanged" };
  }
  if (options.capMode === "refuse") {
    return {
      kind: "refused",
      reason: "keep_alive_over_cap",
      message: `keep_alive ${shown(node)} ${
        keepAlive.kind === "forever" ? "(forever) " : ""
      }exceeds this client's cap of ${cap} seconds`,
    };
  }
  const seconds: JsonNode = { kind: "number", raw: String(cap), value: cap };
  return { kind: "rewritten", body: setField(body, "keep_alive", seconds) };
}

/** `keep_alive` as Ollama's `Duration.UnmarshalJSON` reads it. */
function readKeepAlive(node: JsonNode): KeepAlive {
  if (node.kind === "number") {
    if (!Number.isFinite(node.value)) {
      return { kind: "unreadable", why: "the number is out of range" };
    }
    if (node.value < 0) return { kind: "forever" };
    const nanoseconds = node.value * NS_PER_SECOND;
    if (nanoseconds >= 2 ** 63) {
      return {
        kind: "unreadable",
        why: "more seconds than Ollama can represent",
      };
    }
    return { kind: "duration", nanoseconds: BigInt(Math.trunc(nanoseconds)) };
  }

  if (node.kind === "string") {
    const parsed = parseGoDuration(node.value);
    if (typeof parsed === "string") return { kind: "unreadable", why: parsed };
    if (parsed < 0n) return { kind: "forever" };
    return { kind: "duration", nanoseconds: parsed };
  }

  return {
    kind: "unreadable",
    why: `it is ${node.kind === "bool" ? "a boolean" : `an ${node.kind}`}`,
  };
}

/**
 * Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` with the
 * units ns, us (µs, μs), ms, s, m, h, or the bare `0`. Returns nanoseconds,
 * or why the text is refused. Fractions are converted with Go's floating
 * point steps so the result matches Go to the nanosecond.
 */
function parseGoDuration(text: string): bigint | string {
  let rest = text;
  let negative = false;
  if (rest.startsWith("-") || rest.startsWith("+")) {
    negative = rest[0] === "-";
    rest = rest.slice(1);
  }
  if (rest === "0") return 0n;
  if (rest === "") return "the text is empty";

  let total = 0n;
  while (rest !== "") {
    if (rest[0] !== "." && !isDigit(rest[0])) {
      return `${JSON.stringify(rest[0])} is not a digit`;
    }

    // 1. Whole part.
    let whole = 0n;
    let i = 0;
    for (; i < rest.length && isDigit(rest[i]); i++) {
      whole = whole * 10n + BigInt(rest.charCodeAt(i) - 0x30);
      if (whole > INT64_LIMIT) return "the duration overflows";
    }
    const hasWhole = i > 0;
    rest = rest.slice(i);

    // 2. Fraction: digits past 63 bits of precision are ignored, as in Go.
    let fraction = 0n;
    let scale = 1;
    let hasFraction = false;
    if (rest.startsWith(".")) {
      rest = rest.slice(1);
      let j = 0;
      let saturated = false;
      for (; j < rest.length && isDigit(rest[j]); j++) {
        if (saturated) continue;
        const next = fraction * 10n + BigInt(rest.charCodeAt(j) - 0x30);
        if (fraction > (INT64_LIMIT - 1n) / 10n || next > INT64_LIMIT) {
          saturated = true;
          continue;
        }
        fraction = next;
        scale *= 10;
      }
      hasFraction = j > 0;
      rest = rest.slice(j);
    }
    if (!hasWhole && !hasFraction) return "a number has no digits";

    // 3. Unit: everything up to the next digit or dot.
    let k = 0;
    while (k < rest.length && rest[k] !== "." && !isDigit(rest[k])) k++;
    if (k === 0) return "a number has no unit";
    const unit = UNIT_NANOSECONDS[rest.slice(0, k)];
    if (unit === undefined) {
      return `unknown unit ${JSON.stringify(rest.slice(0, k))}`;
    }
    rest = rest.slice(k);

    // 4. Scale and add, refusing overflow as Go does.
    if (whole > INT64_LIMIT / unit) return "the duration overflows";
    let value = whole * unit;
    if (fraction > 0n) {
      value += BigInt(
        Math.trunc(Number(fraction) * (Number(unit) / scale)),
      );
      if (value > INT64_LIMIT) return "the duration overflows";
    }
    total += value;
    if (total > INT64_LIMIT) return "the duration overflows";
  }

  if (negative) return -total;
  if (total > INT64_LIMIT - 1n) return "the duration overflows";
  return total;
}

function isDigit(char: string): boolean {
  return char >= "0" && char <= "9";
}

function shown(node: JsonNode): string {
  if (node.kind === "string") {
    const quoted = JSON.stringify(node.value);
    return quoted.length > MAX_SHOWN_VALUE
      ? `${quoted.slice(0, MAX_SHOWN_VALUE)}…`
      : quoted;
  }
  if (node.kind === "number") {
    return node.raw.length > MAX_SHOWN_VALUE
      ? `${node.raw.slice(0, MAX_SHOWN_VALUE)}…`
      : node.raw;
  }
  return node.kind === "bool" ? String(node.value) : `(${node.kind})`;
}
