/**
 * The policy of a person who signed in through OIDC: the `role_policies`
 * their roles match, merged, or their `user_overrides` entry.
 *
 * @module
 */

import type { CapMode, Rate, SubjectPolicy } from "../config/policy.ts";

type LimitField =
  | "maxRequestBytes"
  | "maxCtx"
  | "maxPredict"
  | "maxConcurrent"
  | "maxKeepAliveSeconds"
  | "maxTokensPerDay";

/**
 * Merges the role policies matching `roles`. Allowances merge
 * most-permissively: union of `allowModels`, the highest limits (no limit
 * wins over any number; rates compare by requests per millisecond),
 * `allowContext`/`allowManagement` if any role has them, and `capMode`
 * `"clamp"` only when every matched role clamps. Every matched role's
 * `denyModels` and `denyPromptPatterns` apply (union). No matching role →
 * `undefined` (the caller refuses). A user override (by username) replaces
 * role policy entirely.
 *
 * @example
 * ```ts
 * const policy = policyForRoles(identity.roles, {
 *   rolePolicies: config.rolePolicies,
 *   userOverrides: config.userOverrides,
 *   username: identity.username,
 * });
 * if (policy === undefined) refuse(403, "no_matching_role", "…");
 * ```
 */
export function policyForRoles(
  roles: readonly string[],
  options: {
    rolePolicies: ReadonlyMap<string, SubjectPolicy>;
    userOverrides: ReadonlyMap<string, SubjectPolicy>;
    username: string;
  },
): SubjectPolicy | undefined {
  const override = options.userOverrides.get(options.username);
  if (override !== undefined) return override;

  const matched = [...new Set(roles)]
    .map((role) => options.rolePolicies.get(role))
    .filter((policy) => policy !== undefined);
  if (matched.length === 0) return undefined;
  if (matched.length === 1) return matched[0];
  return mergeRolePolicies(matched);
}

function mergeRolePolicies(policies: readonly SubjectPolicy[]): SubjectPolicy {
  function highest(field: LimitField): number | undefined {
    return highestLimit(policies.map((policy) => policy[field]));
  }
  const capMode: CapMode =
    policies.every((policy) => policy.capMode === "clamp") ? "clamp" : "refuse";

  return Object.freeze({
    origin: policies.map((policy) => policy.origin).join(" + "),
    allowModels: union(policies.map((policy) => policy.allowModels)),
    denyModels: union(policies.map((policy) => policy.denyModels)),
    rateLimit: highestRate(policies.map((policy) => policy.rateLimit)),
    maxRequestBytes: highest("maxRequestBytes"),
    maxCtx: highest("maxCtx"),
    maxPredict: highest("maxPredict"),
    maxConcurrent: highest("maxConcurrent"),
    maxKeepAliveSeconds: highest("maxKeepAliveSeconds"),
    maxTokensPerDay: highest("maxTokensPerDay"),
    denyPromptPatterns: union(
      policies.map((policy) => policy.denyPromptPatterns),
    ),
    capMode,
    allowContext: policies.some((policy) => policy.allowContext),
    allowManagement: policies.some((policy) => policy.allowManagement),
  });
}

function union<T>(lists: readonly (readonly T[])[]): readonly T[] {
  return Object.freeze([...new Set(lists.flat())]);
}

/** `undefined` is "no limit", which is higher than any number. */
function highestLimit(
  limits: readonly (number | undefined)[],
): number | undefined {
  if (limits.includes(undefined)) return undefined;
  return Math.max(...(limits as number[]));
}

function highestRate(
  rates: readonly (Rate | undefined)[],
): Rate | undefined {
  if (rates.includes(undefined)) return undefined;
  return (rates as Rate[]).reduce((best, rate) =>
    rate.count / rate.periodMs > best.count / best.periodMs ? rate : best
  );
}
