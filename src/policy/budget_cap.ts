/**
 * Lowers a request's generation limit to what is left of its token budget,
 * and reads back the limit the forwarded body then carries (the amount to
 * reserve). Over-budget values are always lowered, never refused: the
 * client asked for nothing wrong, the day's budget is just nearly spent.
 *
 * @module
 */

import type { CapField } from "../routes/table.ts";
import type { JsonNode } from "../request/go_json.ts";
import { getField, getMapEntry } from "../request/go_fields.ts";
import { applyCaps } from "./caps.ts";

/** The body to forward and the generation limit it carries. */
export interface BudgetCap {
  /** The rewritten body, or undefined when the body already fits. */
  readonly body?: JsonNode;
  /** Tokens the request may generate (what Ollama will stop at). */
  readonly limit: number;
}

/**
 * Applies `remaining` as a generation cap (clamping) to `body`, whose
 * generation limit lives in `capField`.
 *
 * Call it after the policy's own caps, which have refused any value Ollama
 * would not read; a value left that Butler cannot read as an integer means
 * a bug, and throws.
 *
 * @example
 * ```ts
 * const cap = applyBudgetCap(body, { capField: "max_tokens", remaining: 300 });
 * reserve(cap.limit);
 * forward(serializeJson(cap.body ?? body));
 * ```
 */
export function applyBudgetCap(
  body: JsonNode,
  options: { capField: CapField; remaining: number },
): BudgetCap {
  const { capField, remaining } = options;
  const caps = applyCaps(body, {
    capField,
    limits: { maxPredict: remaining, capMode: "clamp" },
  });
  if (caps.kind === "refused") throw new RangeError(caps.message);
  const forwarded = caps.kind === "rewritten" ? caps.body : body;
  return {
    body: caps.kind === "rewritten" ? caps.body : undefined,
    limit: readLimit(forwarded, capField),
  };
}

/** The generation limit in a body that went through `applyCaps`. */
function readLimit(body: JsonNode, capField: CapField): number {
  let node: JsonNode | undefined;
  if (capField === "options.num_predict") {
    const options = getField(body, "options");
    if (options?.kind === "object") {
      node = getMapEntry(options, "num_predict", "options");
    }
  } else {
    node = getField(body, capField);
  }
  if (node?.kind !== "number") {
    throw new RangeError(`${capField}: no generation limit after the caps`);
  }
  // Ollama truncates a fractional num_predict toward zero.
  return Math.trunc(node.value);
}
