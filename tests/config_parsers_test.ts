import assert from "node:assert/strict";
import { parseDuration } from "../src/config/duration.ts";
import { compilePromptPattern } from "../src/config/patterns.ts";
import { parseRate } from "../src/config/rate.ts";

Deno.test("parseRate reads every unit spelling", () => {
  const cases: [string, number, number][] = [
    ["5/s", 5, 1_000],
    ["5/sec", 5, 1_000],
    ["5/second", 5, 1_000],
    ["60/m", 60, 60_000],
    ["60/min", 60, 60_000],
    ["60/minute", 60, 60_000],
    ["100/h", 100, 3_600_000],
    ["100/hour", 100, 3_600_000],
    ["1000/d", 1000, 86_400_000],
    ["1000/day", 1000, 86_400_000],
  ];
  for (const [text, count, periodMs] of cases) {
    assert.deepEqual(parseRate(text), { count, periodMs, text });
  }
  assert.equal(parseRate("unlimited"), "unlimited");
});

Deno.test("parseRate refuses what is not a rate", () => {
  const rule = 'write <count>/<sec|min|hour|day> or "unlimited"';
  for (
    const text of [
      "10/mn",
      "10",
      "/min",
      "ten/min",
      "10/MIN",
      " 10/min",
      "10 / min",
      "-1/min",
      "1.5/min",
      "10/minutes",
      "Unlimited",
      "",
    ]
  ) {
    assert.throws(
      () => parseRate(text),
      new RangeError(`${JSON.stringify(text)} is not a rate; ${rule}`),
    );
  }
  assert.throws(
    () => parseRate("0/min"),
    new RangeError(
      '"0/min" is not a rate; the count must be a positive integer ' +
        '(write "unlimited" for no limit)',
    ),
  );
  assert.throws(() => parseRate("99999999999999999999/s"), RangeError);
});

Deno.test("parseDuration reads units and compound durations", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("60m"), 3_600_000);
  assert.equal(parseDuration("24h"), 86_400_000);
  assert.equal(parseDuration("7d"), 604_800_000);
  assert.equal(parseDuration("1h30m"), 5_400_000);
  assert.equal(parseDuration("1.5h"), 5_400_000);
  assert.equal(parseDuration("1.1s"), 1_100);
  assert.equal(parseDuration("0"), 0);
  assert.equal(parseDuration("0s"), 0);
});

Deno.test("parseDuration refuses what is not a duration", () => {
  for (const text of ["", "30", "30 s", "-5s", "5x", "s", "1h 30m", "5S"]) {
    assert.throws(
      () => parseDuration(text),
      new RangeError(
        `${JSON.stringify(text)} is not a duration; write a number and a ` +
          'unit (ms, s, m, h or d), e.g. "500ms", "30s", "24h", "7d"',
      ),
    );
  }
  assert.throws(
    () => parseDuration("1.5ms"),
    new RangeError('"1.5ms" is not a whole number of milliseconds'),
  );
  assert.throws(() => parseDuration("999999999999d"), RangeError);
});

Deno.test("prompt patterns use RE2 syntax", () => {
  const ignore = compilePromptPattern("(?i)\\bignore\\b.*instructions", 3);
  assert.equal(ignore.index, 3);
  assert.equal(ignore.source, "(?i)\\bignore\\b.*instructions");
  assert.equal(ignore.test("Please IGNORE all previous instructions"), true);
  assert.equal(ignore.test("ignored instructions"), false);
  assert.equal(ignore.test("Ignore"), false);

  const digits = compilePromptPattern("[[:digit:]]{4}-\\d{4}", 0);
  assert.equal(digits.test("card 1234-5678"), true);
  assert.equal(digits.test("card 1234 5678"), false);

  // Case matters unless (?i) says otherwise.
  assert.equal(compilePromptPattern("secret", 0).test("SECRET"), false);
  assert.ok(Object.isFrozen(ignore));
});

Deno.test("a pattern RE2 cannot compile is a RangeError with the reason", () => {
  assert.throws(
    () => compilePromptPattern("(a", 0),
    new RangeError(
      '"(a" is not an RE2 pattern: error parsing regexp: missing closing ): `(a`',
    ),
  );
  // Backreferences and lookaround are not RE2.
  assert.throws(() => compilePromptPattern("(a)\\1", 0), RangeError);
  assert.throws(() => compilePromptPattern("a(?=b)", 0), RangeError);
});

Deno.test("a prompt pattern matches in linear time", () => {
  // This input makes a backtracking engine take seconds; RE2 does not
  // backtrack. The test asserts the answer only; a hang would time out CI.
  const pattern = compilePromptPattern("(?i)ignore.*instructions", 0);
  assert.equal(pattern.test("ignore ".repeat(20_000)), false);
});
