/**
 * Request rates as written in `butler.yaml`: `<count>/<unit>` such as
 * `60/min` or `1000/day`, or `unlimited`.
 *
 * @module
 */

import type { Rate } from "./policy.ts";

const UNIT_MS: Readonly<Record<string, number>> = {
  s: 1_000,
  sec: 1_000,
  second: 1_000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  h: 3_600_000,
  hour: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
};

const RATE = /^(\d+)\/([a-z]+)$/;

/**
 * Parses a rate. Units: `s`, `sec`, `second`, `m`, `min`, `minute`, `h`,
 * `hour`, `d`, `day`. The count is a positive integer.
 *
 * @throws {RangeError} naming the text and the accepted form.
 *
 * @example
 * ```ts
 * parseRate("60/min"); // { count: 60, periodMs: 60_000, text: "60/min" }
 * parseRate("unlimited"); // "unlimited"
 * ```
 */
export function parseRate(text: string): Rate | "unlimited" {
  if (text === "unlimited") return "unlimited";

  const match = RATE.exec(text);
  const periodMs = match === null ? undefined : UNIT_MS[match[2]];
  if (match === null || periodMs === undefined) {
    throw new RangeError(
      `${JSON.stringify(text)} is not a rate; write ` +
        `<count>/<sec|min|hour|day> or "unlimited"`,
    );
  }

  const count = Number(match[1]);
  if (count === 0 || !Number.isSafeInteger(count)) {
    throw new RangeError(
      `${JSON.stringify(text)} is not a rate; the count must be a positive ` +
        `integer (write "unlimited" for no limit)`,
    );
  }
  return { count, periodMs, text };
}
