/**
 * Account and internet routes (`/api/me`, `/api/user/keys/*`,
 * `/api/experimental/*`) pass only when the config enables them.
 *
 * @module
 */

import type { Policy } from "../config/policy.ts";
import type { Refusal } from "../errors/refusal.ts";
import type { RouteMatch } from "./table.ts";

/**
 * The refusal for a route the config keeps disabled, or undefined when the
 * route may go on to authentication.
 */
export function routeGate(
  match: RouteMatch,
  policy: Policy,
): Refusal | undefined {
  if (match.route.kind === "account" && !policy.enableAccountRoutes) {
    return {
      status: 403,
      reason: "route_disabled",
      message: `${match.route.pattern} is disabled (enable_account_routes)`,
    };
  }
  if (match.route.kind === "experimental" && !policy.enableExperimentalRoutes) {
    return {
      status: 403,
      reason: "route_disabled",
      message:
        `${match.route.pattern} is disabled (enable_experimental_routes)`,
    };
  }
  return undefined;
}
