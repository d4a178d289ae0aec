/**
 * Combining numeric limits of several policies a request must pass.
 *
 * @module
 */

/** The smallest defined limit; undefined when no policy sets one. */
export function minDefinedLimit(
  values: readonly (number | undefined)[],
): number | undefined {
  let min: number | undefined;
  for (const value of values) {
    if (value !== undefined && (min === undefined || value < min)) min = value;
  }
  return min;
}
