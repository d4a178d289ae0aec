/**
 * A subject's `deny_prompt_patterns` matched as one RE2 program: the
 * patterns are joined into a single alternation, so a text is scanned once
 * whatever the number of patterns, instead of once per pattern. Only when
 * the alternation matches are the patterns tried one by one, to name the
 * rule that matched. Matching stays linear in the length of the text.
 *
 * @module
 */

import { RE2JS } from "re2js";
import type { PromptPattern } from "../config/policy.ts";

/** Finds the first pattern of a list that matches any of some texts. */
export interface PatternSet {
  /**
   * The `index` of the first pattern (in list order) that matches any of
   * `texts`, or `undefined` when none does.
   */
  firstMatch(texts: readonly string[]): number | undefined;
}

const sets = new WeakMap<readonly PromptPattern[], PatternSet>();

/**
 * The pattern set of `patterns`, built once per list (lists are frozen
 * policy objects, so the list itself is the cache key).
 *
 * @example
 * ```ts
 * const set = patternSet(policy.denyPromptPatterns);
 * const rule = set.firstMatch(["a text", "another text"]);
 * if (rule !== undefined) console.log(`deny_prompt_patterns[${rule}]`);
 * ```
 */
export function patternSet(patterns: readonly PromptPattern[]): PatternSet {
  let set = sets.get(patterns);
  if (set === undefined) {
    set = buildSet(patterns);
    sets.set(patterns, set);
  }
  return set;
}

function buildSet(patterns: readonly PromptPattern[]): PatternSet {
  // `(?i)` and the other flags of RE2 are scoped to the group they appear
  // in, so `(?:p1)|(?:p2)` matches exactly where p1 or p2 matches. A `\Q`
  // quote without its `\E` runs to the end of the whole program, so such
  // patterns are left out of the alternation and tried on their own.
  const joinable = patterns.filter((p) => !p.source.includes("\\Q"));
  let combined: RE2JS | undefined;
  if (joinable.length > 1) {
    try {
      combined = RE2JS.compile(
        joinable.map((p) => `(?:${p.source})`).join("|"),
      );
    } catch {
      combined = undefined; // every pattern is then tried on its own
    }
  }
  const alone = combined === undefined
    ? patterns
    : patterns.filter((p) => !joinable.includes(p));

  return {
    firstMatch(texts) {
      if (
        combined !== undefined &&
        !texts.some((text) => combined.test(text)) &&
        !alone.some((p) => texts.some((text) => p.test(text)))
      ) {
        return undefined;
      }

      for (const pattern of patterns) {
        if (texts.some((text) => pattern.test(text))) return pattern.index;
      }
      return undefined;
    },
  };
}
