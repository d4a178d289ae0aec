/**
 * `allow_models` / `deny_models` patterns and the decision they make for a
 * resolved model reference. Deny is checked first and is broad; allow is
 * narrow about the cloud: a model Ollama would run on ollama.com (so the
 * prompt leaves the machine) is allowed only by a pattern that says so.
 *
 * @module
 */

import { type ModelRef, ModelRefError, resolveModelRef } from "./resolve.ts";

/** A compiled model pattern from `allow_models` or `deny_models`. */
export interface ModelPattern {
  /** The pattern as written in the config. */
  readonly text: string;
  /**
   * The pattern names the cloud source (`x:cloud`, `x:1b:cloud`,
   * `x:120b-cloud`): only such a pattern can allow a cloud reference.
   */
  readonly explicitCloud: boolean;
  /**
   * The pattern names `ref`, ignoring the cloud rule for allow lists (that
   * is {@linkcode decideModel}'s job): `*` names every model, cloud ones
   * included; a tagless pattern names every tag and every source of the
   * model; a cloud pattern names only cloud references.
   */
  matches(ref: ModelRef): boolean;
}

/** Why {@linkcode decideModel} decided as it did (also a log reason). */
export type ModelDecisionReason =
  | "denied"
  | "not_allowed"
  | "cloud_not_explicit"
  | "allowed";

/** The outcome of {@linkcode decideModel}. */
export interface ModelDecision {
  readonly allowed: boolean;
  readonly reason: ModelDecisionReason;
  /**
   * The deciding pattern's text: the deny pattern that matched, the allow
   * pattern that allowed, or (for `cloud_not_explicit`) the allow pattern
   * that named the model without naming the cloud.
   */
  readonly pattern?: string;
}

/**
 * Compiles one pattern. `*` alone is the wildcard; anything else is resolved
 * with {@linkcode resolveModelRef}, so `llama3.2` means
 * `registry.ollama.ai/library/llama3.2`, case does not matter, and a pattern
 * without a tag (`llama3.2`, `gpt-oss:cloud`) covers every tag of the model.
 * Throws {@linkcode ModelRefError} for a pattern that is not a valid model
 * reference (globs such as `llama*` included).
 *
 * @example
 * ```ts
 * const pattern = compileModelPattern("llama3.2");
 * pattern.matches(resolveModelRef("LLAMA3.2:1b")); // true
 * ```
 */
export function compileModelPattern(text: string): ModelPattern {
  if (text.trim() === "*") {
    return Object.freeze({
      text,
      explicitCloud: false,
      matches: matchesEverything,
    });
  }
  if (text.includes("*")) {
    throw new ModelRefError(
      text,
      'only "*" alone is a wildcard; name a model, with or without a tag',
    );
  }

  const pattern = resolveModelRef(text);
  const explicitCloud = pattern.source === "cloud";
  return Object.freeze({
    text,
    explicitCloud,
    matches(ref: ModelRef): boolean {
      if (explicitCloud && ref.source !== "cloud") return false;
      return ref.host === pattern.host &&
        ref.namespace === pattern.namespace &&
        ref.model === pattern.model &&
        (!pattern.hasTag || ref.tag === pattern.tag);
    },
  });
}

/**
 * Decides whether `ref` may be used: the first matching deny pattern refuses
 * (`*` and tagless deny patterns cover cloud references too); otherwise an
 * allow pattern must match, and for a cloud reference it must be explicitly
 * cloud; no match refuses (deny by default).
 *
 * @example
 * ```ts
 * const rules = { allow: [compileModelPattern("*")], deny: [] };
 * decideModel(resolveModelRef("llama3.2"), rules).allowed; // true
 * decideModel(resolveModelRef("llama3.2:cloud"), rules).reason; // "cloud_not_explicit"
 * ```
 */
export function decideModel(
  ref: ModelRef,
  rules: {
    readonly allow: readonly ModelPattern[];
    readonly deny: readonly ModelPattern[];
  },
): ModelDecision {
  for (const pattern of rules.deny) {
    if (pattern.matches(ref)) {
      return { allowed: false, reason: "denied", pattern: pattern.text };
    }
  }

  let namedWithoutCloud: string | undefined;
  for (const pattern of rules.allow) {
    if (!pattern.matches(ref)) continue;
    if (ref.source !== "cloud" || pattern.explicitCloud) {
      return { allowed: true, reason: "allowed", pattern: pattern.text };
    }
    namedWithoutCloud ??= pattern.text;
  }

  if (namedWithoutCloud !== undefined) {
    return {
      allowed: false,
      reason: "cloud_not_explicit",
      pattern: namedWithoutCloud,
    };
  }
  return { allowed: false, reason: "not_allowed" };
}

function matchesEverything(): boolean {
  return true;
}
