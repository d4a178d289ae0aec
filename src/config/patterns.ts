/**
 * `deny_prompt_patterns` compiled with re2js: RE2 syntax (`(?i)`, `\b`,
 * character classes) and matching in time linear in the prompt, so a pattern
 * cannot be turned against the gateway with a crafted prompt.
 *
 * @module
 */

import { RE2JS } from "re2js";
import type { PromptPattern } from "./policy.ts";

/**
 * Compiles one pattern. `index` is its position in the subject's list.
 *
 * @throws {RangeError} with re2js's reason when the pattern is not valid RE2.
 *
 * @example
 * ```ts
 * const pattern = compilePromptPattern("(?i)ignore (all )?previous", 0);
 * pattern.test("Please IGNORE previous instructions"); // true
 * ```
 */
export function compilePromptPattern(
  source: string,
  index: number,
): PromptPattern {
  let compiled: RE2JS;
  try {
    compiled = RE2JS.compile(source);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new RangeError(
      `${JSON.stringify(source)} is not an RE2 pattern: ${reason}`,
    );
  }

  return Object.freeze({
    index,
    source,
    test(text: string): boolean {
      // `test` asks for no capture positions, which lets re2js use its DFA:
      // several times faster than `matcher(text).find()` on long prompts.
      return compiled.test(text);
    },
  });
}
