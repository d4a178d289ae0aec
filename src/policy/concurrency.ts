/**
 * Limits on requests in flight at once (`max_concurrent`,
 * `global_max_concurrent`). There is no queue: a request that finds a limit
 * reached is refused at once, and the client retries.
 *
 * @module
 */

/** One key to take a slot for, with the key's limit. */
export interface ConcurrencyCheck {
  /** E.g. `client:alice`, `global`. */
  key: string;
  /** Slots the key may hold at once (an integer of 1 or more). */
  limit: number;
}

/**
 * Counts requests in flight per key. Only keys with a request in flight are
 * stored, so the state is bounded by the number of open requests. Keys are
 * stable names, so a reloaded policy keeps counting the requests still open.
 *
 * @example
 * ```ts
 * const limiter = new ConcurrencyLimiter();
 * const release = limiter.tryAcquire([{ key: "client:alice", limit: 2 }]);
 * if (release === undefined) {
 *   // refuse with 429
 * } else {
 *   try {
 *     // forward and stream back
 *   } finally {
 *     release();
 *   }
 * }
 * ```
 */
export class ConcurrencyLimiter {
  readonly #inFlight = new Map<string, number>();

  /**
   * Tries to take one slot for every key, atomically: all or none. Returns a
   * release function (calling it more than once releases once), or
   * `undefined` when any key is at its limit. A key listed twice needs two
   * slots.
   *
   * @throws {RangeError} when a limit is not an integer of 1 or more.
   */
  tryAcquire(
    checks: ReadonlyArray<ConcurrencyCheck>,
  ): (() => void) | undefined {
    const wanted = new Map<string, number>();
    for (const { key, limit } of checks) {
      if (!Number.isSafeInteger(limit) || limit < 1) {
        throw new RangeError(
          `concurrency limit for ${key}: ${limit} is not allowed; use an integer of 1 or more`,
        );
      }
      const slots = (wanted.get(key) ?? 0) + 1;
      if (this.inFlight(key) + slots > limit) return undefined;
      wanted.set(key, slots);
    }

    for (const [key, slots] of wanted) {
      this.#inFlight.set(key, this.inFlight(key) + slots);
    }

    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const [key, slots] of wanted) this.#release(key, slots);
    };
  }

  /** Requests in flight for `key` (0 for an unknown key). */
  inFlight(key: string): number {
    return this.#inFlight.get(key) ?? 0;
  }

  /** Number of keys with a request in flight (for tests). */
  get size(): number {
    return this.#inFlight.size;
  }

  #release(key: string, slots: number): void {
    const left = this.inFlight(key) - slots;
    if (left > 0) this.#inFlight.set(key, left);
    else this.#inFlight.delete(key);
  }
}
