/**
 * What keeps `POST /auth/login` from being a password-guessing oracle or a
 * way to burn Butler's CPU: failed logins are counted per username and per
 * client address in fixed windows, and only a few bcrypt verifications run
 * at once.
 *
 * @module
 */

/** A source of the current time in milliseconds. */
export interface Clock {
  now(): number;
}

/** Options of {@link LoginThrottle}. */
export interface LoginThrottleOptions {
  /** Default: `Date.now`. */
  clock?: Clock;
  /** Failed logins per username within a window before refusing. Default 5. */
  maxFailures?: number;
  /**
   * Failed logins per client address within a window before refusing.
   * Default 20: several people may share one address.
   */
  maxFailuresPerAddress?: number;
  /** Length of the counting window. Default 15 minutes. */
  windowMs?: number;
  /**
   * Most usernames (and, separately, addresses) tracked. When full, expired
   * entries go first, then the oldest. Default 10000.
   */
  maxEntries?: number;
  /** bcrypt verifications allowed in flight at once. Default 4. */
  maxConcurrentVerifications?: number;
}

interface FailureCount {
  count: number;
  windowStart: number;
}

/**
 * Failed-login throttling per username and per client address, with bounded
 * state and an injected clock, plus a global limit on concurrent bcrypt work.
 *
 * A success clears the username's count but not the address's: otherwise a
 * client holding one valid account could reset its address count between
 * guesses at other accounts.
 *
 * @example
 * ```ts
 * const throttle = new LoginThrottle();
 * const decision = throttle.check(username, address);
 * if (!decision.allowed) return tooMany(decision.retryAfterSeconds);
 * ```
 */
export class LoginThrottle {
  #clock: Clock;
  #maxFailures: number;
  #maxFailuresPerAddress: number;
  #windowMs: number;
  #maxEntries: number;
  #maxConcurrentVerifications: number;
  #byUsername = new Map<string, FailureCount>();
  #byAddress = new Map<string, FailureCount>();
  #verificationsInFlight = 0;

  /** @throws {RangeError} naming an option that is not a positive integer. */
  constructor(options: LoginThrottleOptions = {}) {
    this.#clock = options.clock ?? Date;
    this.#maxFailures = positiveInteger("maxFailures", options.maxFailures, 5);
    this.#maxFailuresPerAddress = positiveInteger(
      "maxFailuresPerAddress",
      options.maxFailuresPerAddress,
      20,
    );
    this.#windowMs = positiveInteger("windowMs", options.windowMs, 900_000);
    this.#maxEntries = positiveInteger(
      "maxEntries",
      options.maxEntries,
      10_000,
    );
    this.#maxConcurrentVerifications = positiveInteger(
      "maxConcurrentVerifications",
      options.maxConcurrentVerifications,
      4,
    );
  }

  /** Whether a login attempt may go ahead, and if not, for how long to wait. */
  check(
    username: string,
    address: string,
  ): { allowed: true } | { allowed: false; retryAfterSeconds: number } {
    const now = this.#clock.now();
    const waits = [
      this.#waitMs(this.#byUsername.get(username), this.#maxFailures, now),
      this.#waitMs(
        this.#byAddress.get(address),
        this.#maxFailuresPerAddress,
        now,
      ),
    ];
    const waitMs = Math.max(...waits);
    if (waitMs <= 0) return { allowed: true };
    return { allowed: false, retryAfterSeconds: Math.ceil(waitMs / 1000) };
  }

  /** Counts a failed login against the username and the address. */
  recordFailure(username: string, address: string): void {
    const now = this.#clock.now();
    this.#count(this.#byUsername, username, now);
    this.#count(this.#byAddress, address, now);
  }

  /** Clears the username's failures (the address's count stays). */
  recordSuccess(username: string, _address: string): void {
    this.#byUsername.delete(username);
  }

  /**
   * Takes back one failure counted against `address`: a login counts its
   * attempt as a failure before the password check, so that attempts running
   * at the same time see each other, and gives it back when it succeeds.
   */
  forgiveAttempt(address: string): void {
    const entry = this.#byAddress.get(address);
    if (entry !== undefined && entry.count > 0) entry.count--;
  }

  /**
   * Takes one of the bcrypt verification slots. Returns false when all are
   * in use (the caller answers 429); after true, call
   * {@link releaseVerification} exactly once.
   */
  tryAcquireVerification(): boolean {
    if (this.#verificationsInFlight >= this.#maxConcurrentVerifications) {
      return false;
    }
    this.#verificationsInFlight++;
    return true;
  }

  /** Gives back a slot taken with {@link tryAcquireVerification}. */
  releaseVerification(): void {
    if (this.#verificationsInFlight > 0) this.#verificationsInFlight--;
  }

  /** How many usernames and addresses are tracked (to test the bound). */
  get trackedEntries(): { usernames: number; addresses: number } {
    return {
      usernames: this.#byUsername.size,
      addresses: this.#byAddress.size,
    };
  }

  #waitMs(
    entry: FailureCount | undefined,
    maxFailures: number,
    now: number,
  ): number {
    if (entry === undefined || entry.count < maxFailures) return 0;
    return entry.windowStart + this.#windowMs - now;
  }

  #count(table: Map<string, FailureCount>, key: string, now: number): void {
    const entry = table.get(key);
    if (entry !== undefined && now - entry.windowStart < this.#windowMs) {
      entry.count++;
      return;
    }

    table.delete(key);
    if (table.size >= this.#maxEntries) this.#makeRoom(table, now);
    table.set(key, { count: 1, windowStart: now });
  }

  #makeRoom(table: Map<string, FailureCount>, now: number): void {
    for (const [key, entry] of table) {
      if (now - entry.windowStart >= this.#windowMs) table.delete(key);
    }
    // Maps iterate in insertion order and entries are re-inserted when their
    // window restarts, so the first key is the one whose window is oldest.
    while (table.size >= this.#maxEntries) {
      const oldest = table.keys().next().value as string;
      table.delete(oldest);
    }
  }
}

function positiveInteger(
  name: string,
  value: number | undefined,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(
      `LoginThrottle option ${name}: ${value} is not a positive integer`,
    );
  }
  return value;
}
