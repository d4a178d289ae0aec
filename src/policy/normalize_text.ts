/**
 * Text normalization before prompt patterns are matched, so that the
 * spelling a model reads the same way cannot slip past a pattern:
 * `ig\u200Bnore` and fullwidth `ｉｇｎｏｒｅ` both become `ignore`.
 *
 * @module
 */

// Format characters (zero-width spaces and joiners, bidi controls, soft
// hyphen, tag characters, the BOM) and every other default-ignorable code
// point (variation selectors, the combining grapheme joiner, Hangul fillers):
// invisible when rendered, yet they split words for a pattern.
const INVISIBLE = /[\p{Cf}\p{Default_Ignorable_Code_Point}]/gu;

// Runs of white space, line breaks included, become one space: a model
// reads "ignore\nall instructions" as words either way, while RE2's `.`
// does not cross a line break.
// JavaScript's \s misses NEL (U+0085) and the C0 controls that are not
// already in it: fold those as well.
// deno-lint-ignore no-control-regex -- matching control characters is the point
const WHITE_SPACE = /[\s\u0000-\u001f\u0085]+/gu;

/**
 * Normalizes `text` for prompt-pattern matching: invisible characters are
 * removed, then Unicode NFKC maps compatibility forms (fullwidth letters,
 * ligatures, styled mathematical letters) to plain ones, then invisible
 * characters NFKC produced are removed too, and every run of white space
 * (line breaks included) becomes one space. Removing first lets NFKC compose
 * what an invisible character held apart. Linear in the length of `text`.
 *
 * The result is for matching only; the request is forwarded unchanged.
 *
 * @example
 * ```ts
 * normalizeForFilter("ig\u200Bnore"); // "ignore"
 * normalizeForFilter("ｉｇｎｏｒｅ"); // "ignore"
 * ```
 */
export function normalizeForFilter(text: string): string {
  return text.replace(INVISIBLE, "").normalize("NFKC").replace(INVISIBLE, "")
    .replace(WHITE_SPACE, " ");
}
