/**
 * What a request is handled with: the runtime built from one policy
 * (replaced whole on reload), the state shared across reloads, and the
 * per-request context the steps of the request path pass along.
 *
 * @module
 */

import type { Policy } from "./config/policy.ts";
import { ApiKeyIndex } from "./auth/api_keys.ts";
import type { Identity } from "./auth/identity.ts";
import type { OidcVerifier } from "./auth/oidc.ts";
import type { LoginThrottle } from "./auth/login_throttle.ts";
import type { RateLimiter } from "./policy/rate_limiter.ts";
import type { ConcurrencyLimiter } from "./policy/concurrency.ts";
import type { TokenBudgets } from "./policy/budgets.ts";
import type { Logger } from "./observe/log.ts";
import type { ButlerMetrics } from "./observe/metrics.ts";

/** Everything a request is handled with; replaced whole on reload. */
export interface Runtime {
  readonly policy: Policy;
  readonly keys: ApiKeyIndex;
  readonly oidc?: OidcVerifier;
}

/** State that outlives a reload: counters keep their subjects' names. */
export interface Shared {
  readonly rate: RateLimiter;
  readonly concurrency: ConcurrencyLimiter;
  readonly throttle: LoginThrottle;
  readonly log: Logger;
  readonly metrics: ButlerMetrics;
  readonly renderMetrics: () => string;
  /** Daily token budgets, by subject key. */
  readonly budgets: TokenBudgets;
}

/** Builds the per-policy part of the runtime. */
export function createRuntime(
  policy: Policy,
  options: { oidc?: OidcVerifier } = {},
): Runtime {
  return { policy, keys: new ApiKeyIndex(policy.clients), oidc: options.oidc };
}

/** Per-request facts gathered along the way, for the log line. */
export interface Trace {
  readonly start: number;
  route: string;
  identity?: Identity;
  model?: string;
  bytesIn: number;
  /** The RateLimit headers, once the rate limits were taken. */
  rateHeaders?: Record<string, string>;
}

/** What every step of one request is handled with. */
export interface Context {
  readonly runtime: Runtime;
  readonly shared: Shared;
  readonly trace: Trace;
  /** Aborts every upstream request when the shutdown grace period ends. */
  readonly shutdownSignal: AbortSignal;
  /** Exchanges with the upstream in progress, aborted at that moment. */
  readonly exchanges: Set<AbortController>;
  /** How long a request body Butler reads may take to arrive. */
  readonly bodyReadTimeoutMs: number;
}
