/**
 * Answers a model listing (`/api/tags`, `/api/ps`, `/v1/models`) with only
 * the models the caller may use, and accounts for it.
 *
 * @module
 */

import type { Identity } from "../auth/identity.ts";
import type { Refusal } from "../errors/refusal.ts";
import { modelAllowedForAll } from "../policy/decide.ts";
import type { RouteMatch } from "../routes/table.ts";
import type { Context } from "../runtime.ts";
import { clientResponseHeaders } from "./headers.ts";
import { filterListing } from "./list_filter.ts";

/** What {@linkcode answerListing} answers with. */
export interface ListingOptions {
  readonly context: Context;
  readonly match: RouteMatch;
  readonly identity: Identity;
  /** Rate-limit headers the answer carries. */
  readonly rateHeaders: Record<string, string>;
  /** Ends the exchange (frees the concurrency slot); called once. */
  readonly release: () => void;
}

/**
 * The client's answer to a listing the upstream answered with `upstream`,
 * or a refusal (502) when the upstream's listing cannot be read. Failed and
 * `HEAD` answers pass unchanged.
 */
export async function answerListing(
  upstream: Response,
  options: ListingOptions,
): Promise<Response | Refusal> {
  const { context, match, identity } = options;
  const clientName = identity.client?.name ?? "-";
  const policies = identity.subjects.map((s) => s.policy);
  try {
    if (!upstream.ok || match.route.method === "HEAD") {
      const headers = clientResponseHeaders(upstream.headers, {
        bodyChanged: false,
      });
      return new Response(upstream.body, { status: upstream.status, headers });
    }
    const filtered = await filterListing(upstream, {
      route: match.route.pattern,
      allowed: (ref) => modelAllowedForAll(ref, policies),
    });
    if (filtered === undefined) {
      return {
        status: 502,
        reason: "bad_upstream_listing",
        message: "upstream sent a model listing Butler cannot read",
      };
    }
    const headers = clientResponseHeaders(upstream.headers, {
      bodyChanged: true,
    });
    headers.set("content-type", "application/json; charset=utf-8");
    for (const [name, value] of Object.entries(options.rateHeaders)) {
      headers.set(name, value);
    }
    context.shared.log.info("response", {
      client: identity.client?.name,
      user: identity.user,
      auth: identity.auth,
      route: match.route.label,
      status: upstream.status,
      duration_ms: Math.round(performance.now() - context.trace.start),
      bytes_in: 0,
      bytes_out: filtered.length,
    });
    context.shared.metrics.requests.inc({
      client: clientName,
      user: identity.user ?? "-",
      auth: identity.auth,
      model: "-",
      route: match.route.label,
      status: String(upstream.status),
    });
    return new Response(filtered, { status: upstream.status, headers });
  } finally {
    options.release();
    context.shared.metrics.inFlightRequests.dec({ client: clientName });
  }
}
