import assert from "node:assert/strict";
import { normalizeForFilter } from "../src/policy/normalize_text.ts";

Deno.test("zero-width and other invisible characters are removed", () => {
  assert.equal(normalizeForFilter("ig\u200Bnore"), "ignore");
  const invisibles = [
    "\u200B",
    "\u200C",
    "\u200D",
    "\u200E",
    "\u200F", // zero-width, marks
    "\u2060",
    "\u2061",
    "\u2062",
    "\u2063",
    "\u2064", // word joiner, invisible ops
    "\uFEFF",
    "\u00AD",
    "\u180E",
    "\u202E",
    "\u2066",
    "\u{E0001}",
    "\u{E0069}",
    "\u{E007F}", // tag characters
    "\uFE0F",
    "\uFE00",
    "\u{E0100}",
    "\u034F",
    "\u3164",
    "\uFFA0",
  ];
  for (const mark of invisibles) {
    assert.equal(
      normalizeForFilter(`ig${mark}no${mark}re`),
      "ignore",
      `U+${mark.codePointAt(0)!.toString(16).toUpperCase()}`,
    );
  }
});

Deno.test("NFKC maps compatibility forms to plain letters", () => {
  assert.equal(normalizeForFilter("ｉｇｎｏｒｅ"), "ignore");
  assert.equal(normalizeForFilter("ＩＧＮＯＲＥ previous"), "IGNORE previous");
  assert.equal(normalizeForFilter("\uFB01le"), "file"); // ﬁ ligature
  assert.equal(normalizeForFilter("\u{1D422}\u{1D420}\u{1D427}"), "ign"); // bold
  assert.equal(normalizeForFilter("\u2460"), "1"); // circled digit
});

Deno.test("an invisible character does not block composition", () => {
  assert.equal(normalizeForFilter("e\u200B\u0301"), "\u00E9");
});

Deno.test("ordinary text is unchanged", () => {
  const text = "Hello, world! Ça va? 日本語 — emoji 😀 new line tab";
  assert.equal(normalizeForFilter(text), text);
});

Deno.test("line breaks and white space runs become one space", () => {
  assert.equal(
    normalizeForFilter("ignore\nall\r\n\tprevious\u2028  instructions"),
    "ignore all previous instructions",
  );
});

Deno.test("NEL and C0 controls fold like white space", () => {
  assert.equal(
    normalizeForFilter("ignore\u0085previous\u001finstructions\u000bnow"),
    "ignore previous instructions now",
  );
});
