/**
 * Durations as written in `butler.yaml`: `500ms`, `30s`, `60m`, `24h`, `7d`,
 * or several parts like `1h30m` (Go's `time.ParseDuration` plus days).
 *
 * @module
 */

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;

/**
 * Parses a duration into whole milliseconds. `"0"` alone is zero.
 *
 * @throws {RangeError} naming the text and the accepted form.
 *
 * @example
 * ```ts
 * parseDuration("24h"); // 86_400_000
 * parseDuration("1h30m"); // 5_400_000
 * ```
 */
export function parseDuration(text: string): number {
  if (text === "0") return 0;
  if (text === "") throw notADuration(text);

  let total = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < text.length) {
    const match = PART.exec(text);
    if (match === null) throw notADuration(text);
    // Decimal fractions (`1.1s`) are not exact in binary, hence the rounding.
    const ms = Number(match[1]) * UNIT_MS[match[2]];
    if (Math.abs(ms - Math.round(ms)) > 1e-6) {
      throw new RangeError(
        `${JSON.stringify(text)} is not a whole number of milliseconds`,
      );
    }
    total += Math.round(ms);
  }

  if (!Number.isSafeInteger(total)) {
    throw new RangeError(`${JSON.stringify(text)} is too long a duration`);
  }
  return total;
}

function notADuration(text: string): RangeError {
  return new RangeError(
    `${JSON.stringify(text)} is not a duration; write a number and a unit ` +
      `(ms, s, m, h or d), e.g. "500ms", "30s", "24h", "7d"`,
  );
}
