import assert from "node:assert/strict";
import { compilePromptPattern } from "../src/config/patterns.ts";
import { patternSet } from "../src/policy/pattern_set.ts";

function set(...sources: string[]) {
  return patternSet(
    Object.freeze(sources.map((s, i) => compilePromptPattern(s, i))),
  );
}

Deno.test("patternSet names the first pattern in list order that matches", () => {
  const patterns = set("(?i)ignore.*instructions", "secret", "plan");
  assert.equal(patterns.firstMatch(["a plan", "IGNORE the instructions"]), 0);
  assert.equal(patterns.firstMatch(["the secret plan"]), 1);
  assert.equal(patterns.firstMatch(["a plan"]), 2);
  assert.equal(patterns.firstMatch(["nothing here", ""]), undefined);
  assert.equal(patterns.firstMatch([]), undefined);
});

Deno.test("patternSet keeps each pattern's flags to that pattern", () => {
  const patterns = set("(?i)abc", "xyz", "^start", "end$");
  assert.equal(patterns.firstMatch(["ABC"]), 0);
  assert.equal(patterns.firstMatch(["XYZ"]), undefined);
  assert.equal(patterns.firstMatch(["not start"]), undefined);
  assert.equal(patterns.firstMatch(["start here"]), 2);
  assert.equal(patterns.firstMatch(["the end"]), 3);
});

Deno.test("patternSet tries a \\Q quote on its own", () => {
  const patterns = set("\\Qa.b", "zzz");
  assert.equal(patterns.firstMatch(["a.b"]), 0);
  assert.equal(patterns.firstMatch(["axb"]), undefined);
  assert.equal(patterns.firstMatch(["zzz"]), 1);
  assert.equal(patterns.firstMatch(["a.b|(?:zzz)"]), 0);
});

Deno.test("patternSet is linear on the worst case of a backtracking engine", () => {
  const patterns = set("(?i)ignore.*instructions");
  const text = "ignore ".repeat(30_000);
  assert.equal(patterns.firstMatch([text]), undefined);
  assert.equal(patterns.firstMatch([text + "instructions"]), 0);
});
