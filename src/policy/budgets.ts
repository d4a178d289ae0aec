/**
 * Daily token budgets (`max_tokens_per_day`): generated tokens per subject
 * (`client:<name>`, `user:<name>`) per calendar day in the budget time zone.
 *
 * A generating request is admitted only while every budget it must pass has
 * tokens left; it may generate at most the smallest remainder, and that
 * amount is reserved before it is forwarded, so requests in flight together
 * can never spend more than is left. When the answer ends, the reservation
 * is settled to the count Ollama reported (or the chunks that streamed, when
 * the client hung up) and the rest is released.
 *
 * A request counts against the day it started on. Only the used counts are
 * persisted (`budget_store.ts`); reservations live as long as their request.
 *
 * @module
 */

import { type Refusal, refuse } from "../errors/refusal.ts";
import type { Subject } from "../auth/identity.ts";

/** One budget a request must pass. */
export interface BudgetCheck {
  /** The subject key, e.g. `client:app`. */
  readonly key: string;
  /** `max_tokens_per_day` of that subject. */
  readonly limit: number;
}

/** Used tokens of one subject on one day, as persisted. */
export interface DayUsage {
  /** The calendar day in the budget time zone, `YYYY-MM-DD`. */
  readonly day: string;
  /** Generated tokens charged so far that day. */
  readonly generated: number;
}

/** Every subject's usage, keyed by subject key. */
export type UsageSnapshot = Readonly<Record<string, DayUsage>>;

/** An amount held for a request in flight. */
export interface BudgetReservation {
  /** Tokens reserved (the generation limit the forwarded request carries). */
  readonly amount: number;
  /**
   * Replaces the reservation by the tokens actually generated. Only the
   * first call counts; later calls do nothing.
   */
  settle(generated: number): void;
}

/** Options for {@linkcode TokenBudgets}. */
export interface TokenBudgetsOptions {
  /** IANA time zone whose midnight starts a new budget day. Default UTC. */
  timeZone?: string;
  /** Usage read from the state file. */
  usage?: UsageSnapshot;
  /** The clock, in epoch milliseconds (tests move it). */
  now?: () => number;
}

/** What {@linkcode TokenBudgets.admit} grants. */
export interface BudgetGrant {
  /**
   * The most the request may generate: the smallest remainder of its
   * budgets; undefined when none of its subjects has a budget.
   */
  readonly remaining?: number;
}

interface Entry {
  day: string;
  generated: number;
  reserved: number;
}

const NO_RESERVATION: BudgetReservation = Object.freeze({
  amount: 0,
  settle() {},
});

/**
 * The budget checks a generating request must pass: each of its subjects
 * with a `max_tokens_per_day`.
 */
export function budgetChecksFor(
  subjects: readonly Subject[],
): BudgetCheck[] {
  return subjects.flatMap((subject) =>
    subject.policy.maxTokensPerDay === undefined
      ? []
      : [{ key: subject.key, limit: subject.policy.maxTokensPerDay }]
  );
}

/**
 * Token budgets of every subject, shared by all requests and kept across
 * config reloads (by subject key).
 *
 * @example
 * ```ts
 * const budgets = new TokenBudgets({ timeZone: "Europe/Paris" });
 * const checks = budgetChecksFor(identity.subjects);
 * const grant = budgets.admit(checks);
 * if (isRefusal(grant)) return refused(grant);
 * const reservation = budgets.reserve(checks, Math.min(grant.remaining!, 512));
 * // … when the answer ends:
 * reservation.settle(counts.generated ?? counts.contentChunks);
 * ```
 */
export class TokenBudgets {
  readonly timeZone: string;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  readonly #dayFormat: Intl.DateTimeFormat;
  #dirty = false;

  constructor(options: TokenBudgetsOptions = {}) {
    this.timeZone = options.timeZone ?? "UTC";
    this.#now = options.now ?? Date.now;
    this.#dayFormat = new Intl.DateTimeFormat("en-CA", {
      timeZone: this.timeZone,
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
    });
    for (const [key, usage] of Object.entries(options.usage ?? {})) {
      this.#entries.set(key, { ...usage, reserved: 0 });
    }
  }

  /** Today in the budget time zone, `YYYY-MM-DD`. */
  today(): string {
    return this.#dayOf(this.#now());
  }

  /**
   * Admits a request, or refuses it with 429: `token_budget_spent` (with
   * `Retry-After` until the next midnight) when a budget is used up for the
   * day, `token_budget_reserved` (retry in a second) when what is left is
   * held by requests in flight.
   */
  admit(checks: readonly BudgetCheck[]): BudgetGrant | Refusal {
    if (checks.length === 0) return {};
    let remaining = Infinity;
    for (const check of checks) {
      const entry = this.#entry(check.key);
      if (entry.generated >= check.limit) {
        const retry = this.secondsUntilReset();
        return refuse(
          429,
          "token_budget_spent",
          `daily token budget of ${check.limit} is spent; it resets at ` +
            `midnight ${this.timeZone}, in ${retry} s`,
          {
            headers: { "retry-after": String(retry) },
            detail: { budget: check.key, limit: check.limit },
          },
        );
      }
      remaining = Math.min(
        remaining,
        check.limit - entry.generated - entry.reserved,
      );
    }
    if (remaining <= 0) {
      return refuse(
        429,
        "token_budget_reserved",
        "the rest of today's token budget is reserved by requests in " +
          "flight; retry when they finish",
        { headers: { "retry-after": "1" } },
      );
    }
    return { remaining };
  }

  /**
   * Reserves `amount` tokens under every check's key. Call it in the same
   * synchronous step as {@linkcode admit}, so nothing can spend in between.
   */
  reserve(
    checks: readonly BudgetCheck[],
    amount: number,
  ): BudgetReservation {
    if (checks.length === 0) return NO_RESERVATION;
    if (!Number.isSafeInteger(amount) || amount < 0) {
      throw new RangeError(
        `reserve: ${amount} tokens is not allowed; use an integer >= 0`,
      );
    }
    const held = checks.map((check) => {
      const entry = this.#entry(check.key);
      entry.reserved += amount;
      return { entry, day: entry.day };
    });
    let settled = false;
    return {
      amount,
      settle: (generated: number) => {
        if (settled) return;
        settled = true;
        const charge = Number.isFinite(generated) && generated > 0
          ? Math.round(generated)
          : 0;
        for (const { entry, day } of held) {
          // A day that has ended was reset with its reservations.
          if (entry.day !== day) continue;
          entry.reserved -= amount;
          entry.generated += charge;
        }
        if (charge > 0) this.#dirty = true;
      },
    };
  }

  /** Tokens charged to `key` today (reservations not included). */
  used(key: string): number {
    return this.#entry(key).generated;
  }

  /** Seconds until the next midnight in the budget time zone (>= 1). */
  secondsUntilReset(): number {
    const now = this.#now();
    return Math.max(1, Math.ceil((this.#nextMidnight(now) - now) / 1000));
  }

  /** The usage to persist: today's counts of every subject that used any. */
  snapshot(): UsageSnapshot {
    const today = this.today();
    const usage: Record<string, DayUsage> = {};
    for (const [key, entry] of this.#entries) {
      if (entry.day !== today || entry.generated === 0) continue;
      usage[key] = { day: entry.day, generated: entry.generated };
    }
    return usage;
  }

  /** True when counts changed since the last {@linkcode markSaved}. */
  get dirty(): boolean {
    return this.#dirty;
  }

  /** Records that the current counts are being written out. */
  markSaved(): void {
    this.#dirty = false;
  }

  /** Records that a write failed: the counts still need saving. */
  markDirty(): void {
    this.#dirty = true;
  }

  #entry(key: string): Entry {
    const today = this.today();
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      entry = { day: today, generated: 0, reserved: 0 };
      this.#entries.set(key, entry);
    } else if (entry.day !== today) {
      entry.day = today;
      entry.generated = 0;
      entry.reserved = 0;
    }
    return entry;
  }

  #dayOf(epochMs: number): string {
    return this.#dayFormat.format(epochMs);
  }

  /**
   * The first instant after `now` whose day differs from now's: found from
   * the zone's offset, then checked, so days of 23 or 25 hours are right.
   */
  #nextMidnight(now: number): number {
    const [year, month, day] = this.#dayOf(now).split("-").map(Number);
    const tomorrowUtc = Date.UTC(year, month - 1, day + 1);
    let guess = tomorrowUtc - this.#offsetMs(tomorrowUtc);
    guess = tomorrowUtc - this.#offsetMs(guess);
    return guess > now ? guess : now + 1000;
  }

  /** The zone's offset from UTC at `epochMs`, in milliseconds. */
  #offsetMs(epochMs: number): number {
    const parts = new Intl.DateTimeFormat("en-US", {
      timeZone: this.timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    }).formatToParts(epochMs);
    const part = (type: string) =>
      Number(parts.find((p) => p.type === type)?.value);
    const asUtc = Date.UTC(
      part("year"),
      part("month") - 1,
      part("day"),
      part("hour"),
      part("minute"),
      part("second"),
    );
    return asUtc - Math.floor(epochMs / 1000) * 1000;
  }
}
