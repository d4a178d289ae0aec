/**
 * Who a request is from, after authentication: the client, the person, and
 * every policy the request must pass (a service acting for a person must
 * pass both its own and the person's).
 *
 * @module
 */

import type { ClientPolicy, SubjectPolicy } from "../config/policy.ts";

/** How the caller proved who it is. */
export type AuthKind = "api_key" | "jwt" | "oidc";

/** One policy a request must pass, with the key its counters live under. */
export interface Subject {
  /** `client:<name>`, `user:<name>`: the key of rate, concurrency, budgets. */
  readonly key: string;
  readonly policy: SubjectPolicy;
}

export interface Identity {
  readonly auth: AuthKind;
  readonly client?: ClientPolicy;
  readonly user?: string;
  /** Every policy the request must pass; never empty. */
  readonly subjects: readonly Subject[];
}
