/**
 * Applies `deny_prompt_patterns` to every text a request sends to the model.
 * Text is normalized first so look-alike and invisible characters do not
 * hide a keyword, and the patterns run on each text and on all of them
 * joined, so a phrase split across messages is still seen.
 *
 * @module
 */

import type { SubjectPolicy } from "../config/policy.ts";
import { type Refusal, refuse } from "../errors/refusal.ts";
import type { JsonNode } from "../request/go_json.ts";
import { hasOpaqueContext, promptTexts } from "./prompt_texts.ts";
import { normalizeForFilter } from "./normalize_text.ts";
import { patternSet } from "./pattern_set.ts";

/**
 * Returns a 403 refusal when any pattern of any policy matches a text of
 * `body` or one of `formTexts` (multipart fields that reach the prompt), or
 * when the body carries text no filter can read (a `context` token array)
 * and a policy with patterns does not allow it.
 */
export function checkPrompts(
  body: JsonNode | undefined,
  options: {
    route: string;
    policies: readonly SubjectPolicy[];
    formTexts?: readonly string[];
  },
): Refusal | undefined {
  const filtered = options.policies.filter((p) =>
    p.denyPromptPatterns.length > 0
  );
  if (filtered.length === 0) return undefined;

  if (
    body !== undefined && hasOpaqueContext(options.route, body) &&
    !filtered.every((p) => p.allowContext)
  ) {
    return refuse(
      403,
      "opaque_context",
      "prompt rejected: pre-tokenized context cannot be inspected",
    );
  }

  const texts = [
    ...(body === undefined ? [] : promptTexts(options.route, body)),
    ...(options.formTexts ?? []),
  ].map(normalizeForFilter);
  const candidates = texts.length > 1 ? [...texts, texts.join(" ")] : texts;
  for (const policy of filtered) {
    const hit = patternSet(policy.denyPromptPatterns).firstMatch(candidates);
    if (hit !== undefined) {
      return refuse(403, "prompt_rejected", "prompt rejected", {
        detail: { rule: `${policy.origin}.deny_prompt_patterns[${hit}]` },
      });
    }
  }
  return undefined;
}
