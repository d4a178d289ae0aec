/**
 * Seeded randomness for the fuzz tests: reproducible from a printed seed.
 * `FUZZ_SEED` fixes the seed, `FUZZ_CASES` scales the number of cases.
 *
 * @module
 */

/** A seeded source of random choices (mulberry32). */
export class Random {
  #state: number;

  /** Starts the sequence at `seed` (any 32-bit integer). */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** `items` in a random order (a copy). */
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }
}

/** The seed for this run: `FUZZ_SEED`, or a fresh one. */
export function fuzzSeed(): number {
  const fixed = Deno.env.get("FUZZ_SEED");
  if (fixed !== undefined && fixed !== "") {
    const seed = Number(fixed);
    if (!Number.isInteger(seed)) {
      throw new RangeError(`FUZZ_SEED: "${fixed}" is not an integer`);
    }
    return seed;
  }
  return Math.floor(Math.random() * 2 ** 31);
}

/** `FUZZ_CASES` when set, else `defaultCases`. */
export function fuzzCases(defaultCases: number): number {
  const text = Deno.env.get("FUZZ_CASES");
  if (text === undefined || text === "") return defaultCases;
  const cases = Number(text);
  if (!Number.isInteger(cases) || cases < 1) {
    throw new RangeError(`FUZZ_CASES: "${text}" is not a whole number >= 1`);
  }
  return cases;
}
