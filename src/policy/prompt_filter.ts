/**
 * Applies `deny_prompt_patterns` to every text a request sends to the model.
 * Text is normalized first so look-alike and invisible characters do not
 * hide a keyword, and the patterns run on each text and on all of them
 * joined, so a phrase split across messages is still seen.
 *
 * @module
 */

import type { PromptPattern, SubjectPolicy } from "../config/policy.ts";
import { type Refusal, refuse } from "../errors/refusal.ts";
import type { JsonNode } from "../request/go_json.ts";
import { hasOpaqueContext, promptTexts } from "./prompt_texts.ts";
import { normalizeForFilter } from "./normalize_text.ts";

/**
 * Returns a 403 refusal when any pattern of any policy matches a text of
 * `body`, or when the body carries text no filter can read (a `context`
 * token array) and a policy with patterns does not allow it.
 */
export function checkPrompts(
  body: JsonNode,
  options: { route: string; policies: readonly SubjectPolicy[] },
): Refusal | undefined {
  const filtered = options.policies.filter((p) =>
    p.denyPromptPatterns.length > 0
  );
  if (filtered.length === 0) return undefined;

  if (
    hasOpaqueContext(options.route, body) &&
    !filtered.every((p) => p.allowContext)
  ) {
    return refuse(
      403,
      "opaque_context",
      "prompt rejected: pre-tokenized context cannot be inspected",
    );
  }

  const texts = promptTexts(options.route, body).map(normalizeForFilter);
  const candidates = texts.length > 1 ? [...texts, texts.join(" ")] : texts;
  for (const policy of filtered) {
    const hit = firstMatch(policy.denyPromptPatterns, candidates);
    if (hit !== undefined) {
      return refuse(403, "prompt_rejected", "prompt rejected", {
        detail: { rule: `${policy.origin}.deny_prompt_patterns[${hit}]` },
      });
    }
  }
  return undefined;
}

function firstMatch(
  patterns: readonly PromptPattern[],
  texts: readonly string[],
): number | undefined {
  for (const pattern of patterns) {
    for (const text of texts) {
      if (pattern.test(text)) return pattern.index;
    }
  }
  return undefined;
}
