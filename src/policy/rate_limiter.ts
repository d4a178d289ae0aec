/**
 * Request rate limits with the generic cell rate algorithm (GCRA). A rate of
 * `count` per `periodMs` allows a burst of `count` requests and then one
 * request every `periodMs / count` milliseconds: the allowance refills
 * smoothly, so there is no window boundary at which a client gets two bursts
 * back to back.
 *
 * Each key keeps one number, its theoretical arrival time (TAT): the moment
 * at which the key's allowance would be full again. A key whose TAT has
 * passed is indistinguishable from a key never seen, so it is deleted; the
 * state only holds keys that used part of their allowance recently.
 *
 * @module
 */

import type { Rate } from "../config/policy.ts";

/** A source of the current time in milliseconds (injected in tests). */
export interface Clock {
  /** Milliseconds; only differences matter. */
  now(): number;
}

/** The outcome of one rate check, with what the RateLimit headers show. */
export interface RateDecision {
  /** The request may proceed (and, for `take`, was counted). */
  allowed: boolean;
  /** Whole seconds until the next request would be allowed (ceil, ≥1 when refused, 0 when allowed). */
  retryAfterSeconds: number;
  /** Requests still allowed right now (burst left). */
  remaining: number;
  /** Seconds until the allowance is full again. */
  resetSeconds: number;
  /** The rate's `count`. */
  limit: number;
  /** The rate's period in whole seconds (at least 1). */
  periodSeconds: number;
  /** From `takeAll`: the key of the check this decision is (the binding one). */
  key?: string;
}

/** Options of {@linkcode RateLimiter}. */
export interface RateLimiterOptions {
  /** Defaults to `performance.now()`, which never jumps backwards. */
  clock?: Clock;
  /**
   * Hard cap on stored keys (default 100 000). Past it, after dropping the
   * keys with a full allowance, the least recently counted keys are dropped.
   */
  maxEntries?: number;
}

/** One key checked under one rate. */
export interface RateCheck {
  /** E.g. `client:alice`, `user:bob`, `global`. */
  key: string;
  rate: Rate;
}

const DEFAULT_MAX_ENTRIES = 100_000;

// A sweep scans every entry, so it runs when the table doubled since the
// last sweep (amortized O(1) per new key) or after this many checks (so a
// steady set of keys still sheds the idle ones).
const MIN_SWEEP_SIZE = 1_024;
const SWEEP_EVERY_CHECKS = 10_000;

// Emission intervals such as 1000/3 ms are not exact in floating point; a
// request this close to its allowed time counts as on time, so rounding
// never turns an on-time request into a one-second Retry-After.
const SLACK_MS = 1e-6;

const MONOTONIC_CLOCK: Clock = {
  now() {
    return performance.now();
  },
};

/**
 * GCRA limiter over string keys. Keep one instance for the life of the
 * process and key it by stable names (`client:<name>`): a policy reloaded
 * with the same names keeps every counter, and a changed rate applies from
 * the next request on (a stored state stricter than the new rate allows is
 * read as "allowance used up", never as longer than one new period).
 *
 * Eviction at `maxEntries` is fail-open for the evicted key: its allowance
 * starts full again. This is accepted because keys are authenticated
 * identities (a caller cannot mint keys to push others out), the evicted
 * keys are the least recently counted ones (whose allowance is the most
 * likely to be full already), and the alternative, refusing every new key
 * while the table is full, would lock out legitimate users instead.
 *
 * @example
 * ```ts
 * const limiter = new RateLimiter();
 * const rate = { count: 60, periodMs: 60_000, text: "60/min" };
 * const decision = limiter.take("client:alice", rate);
 * if (!decision.allowed) console.log(decision.retryAfterSeconds);
 * ```
 */
export class RateLimiter {
  readonly #clock: Clock;
  readonly #maxEntries: number;
  // key → TAT in ms. Map order is least recently counted first (a counted
  // key is deleted and re-inserted), which is the eviction order.
  readonly #tats = new Map<string, number>();
  #checksSinceSweep = 0;
  #sweepAtSize = MIN_SWEEP_SIZE;

  /** Builds an empty limiter. */
  constructor(options: RateLimiterOptions = {}) {
    const maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(
        `maxEntries: ${maxEntries} is not allowed; use an integer of 1 or more`,
      );
    }
    this.#clock = options.clock ?? MONOTONIC_CLOCK;
    this.#maxEntries = maxEntries;
  }

  /** Checks and, when allowed, consumes one request for `key` under `rate`. */
  take(key: string, rate: Rate): RateDecision {
    return this.takeAll([{ key, rate }]);
  }

  /**
   * Like `take` but checks several (key, rate) pairs atomically: all must
   * allow, and only then all are consumed, so a refusal by the global limit
   * does not use up the client's allowance. Returns the most restrictive
   * decision: the refusing one with the longest wait, or else the one with
   * the least remaining.
   *
   * @throws {RangeError} when `checks` is empty or a rate is not positive.
   */
  takeAll(checks: ReadonlyArray<RateCheck>): RateDecision {
    if (checks.length === 0) {
      throw new RangeError("takeAll: checks is empty; pass at least one");
    }
    const now = this.#clock.now();
    this.#sweepIfDue(now);

    // 1. Decide each check against the state left by the earlier checks of
    // this call, so a key listed twice is counted twice.
    const pending = new Map<string, number>();
    let refused: RateDecision | undefined;
    let tightest: RateDecision | undefined;
    for (const { key, rate } of checks) {
      assertRate(rate, key);
      const stored = pending.get(key) ?? this.#tats.get(key) ?? now;
      const outcome = evaluate(stored, now, rate);
      const decision = { ...outcome.decision, key };
      if (!decision.allowed) {
        if (
          refused === undefined ||
          decision.retryAfterSeconds > refused.retryAfterSeconds
        ) {
          refused = decision;
        }
        continue;
      }
      pending.set(key, outcome.tat);
      if (tightest === undefined || decision.remaining < tightest.remaining) {
        tightest = decision;
      }
    }
    if (refused !== undefined) return refused;

    // 2. Every check allows: count the request under each key.
    for (const [key, tat] of pending) this.#store(key, tat, now);
    return tightest!;
  }

  /** Number of stored entries (for tests). */
  get size(): number {
    return this.#tats.size;
  }

  /**
   * Drops entries whose TAT is not in the future: they are equivalent to a
   * fresh key. Runs lazily from `take`; exposed for tests.
   */
  sweep(): void {
    this.#sweep(this.#clock.now());
  }

  #sweepIfDue(now: number): void {
    this.#checksSinceSweep++;
    if (
      this.#checksSinceSweep >= SWEEP_EVERY_CHECKS ||
      this.#tats.size >= this.#sweepAtSize
    ) {
      this.#sweep(now);
    }
  }

  #sweep(now: number): void {
    for (const [key, tat] of this.#tats) {
      if (tat <= now) this.#tats.delete(key);
    }
    this.#checksSinceSweep = 0;
    this.#sweepAtSize = Math.max(MIN_SWEEP_SIZE, 2 * this.#tats.size);
  }

  #store(key: string, tat: number, now: number): void {
    this.#tats.delete(key);
    this.#tats.set(key, tat);
    if (this.#tats.size <= this.#maxEntries) return;

    this.#sweep(now);
    for (const oldest of this.#tats.keys()) {
      if (this.#tats.size <= this.#maxEntries) break;
      this.#tats.delete(oldest);
    }
  }
}

/** The decision for one check and the TAT to store if it is counted. */
function evaluate(
  storedTat: number,
  now: number,
  rate: Rate,
): { decision: RateDecision; tat: number } {
  const interval = rate.periodMs / rate.count;
  // A TAT more than one period ahead cannot arise under this rate (it comes
  // from a stricter rate before a reload, or a clock that went back): read
  // it as an empty allowance.
  const start = Math.min(Math.max(storedTat, now), now + rate.periodMs);
  const tat = start + interval;
  const allowedAt = tat - rate.periodMs;
  const base = {
    limit: rate.count,
    periodSeconds: wholeSeconds(rate.periodMs),
  };

  if (allowedAt > now + SLACK_MS) {
    return {
      decision: {
        allowed: false,
        retryAfterSeconds: Math.max(1, ceilSeconds(allowedAt - now)),
        remaining: 0,
        resetSeconds: ceilSeconds(start - now),
        ...base,
      },
      tat: start,
    };
  }

  const left = Math.floor((now + rate.periodMs - tat) / interval + 1e-9);
  return {
    decision: {
      allowed: true,
      retryAfterSeconds: 0,
      remaining: Math.min(rate.count - 1, Math.max(0, left)),
      resetSeconds: ceilSeconds(tat - now),
      ...base,
    },
    tat,
  };
}

function assertRate(rate: Rate, key: string): void {
  if (!Number.isSafeInteger(rate.count) || rate.count < 1) {
    throw new RangeError(
      `rate for ${key}: count ${rate.count} is not allowed; use an integer of 1 or more`,
    );
  }
  if (!Number.isFinite(rate.periodMs) || rate.periodMs <= 0) {
    throw new RangeError(
      `rate for ${key}: periodMs ${rate.periodMs} is not allowed; use a positive number`,
    );
  }
}

function ceilSeconds(ms: number): number {
  return Math.max(0, Math.ceil(ms / 1000 - SLACK_MS / 1000));
}

function wholeSeconds(ms: number): number {
  return Math.max(1, ceilSeconds(ms));
}
