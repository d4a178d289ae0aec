/**
 * The request path, one step after the other: route, authenticate, limit,
 * read the body as Ollama would, decide, forward, stream back, account.
 * The handler is a function from `Request` to `Response`; `serveButler`
 * puts it on a socket. Every refusal becomes a response here, logged and
 * counted, in the route's dialect.
 *
 * @module
 */

import { isRefusal, type Refusal } from "./errors/refusal.ts";
import { renderRefusal } from "./errors/render.ts";
import { matchRoute, type RouteMatch } from "./routes/table.ts";
import {
  answerPreflight,
  isPreflight,
  withCorsHeaders,
} from "./routes/cors.ts";
import { ownRoute } from "./routes/own_routes.ts";
import { routeGate } from "./routes/gate.ts";
import { notFound } from "./routes/not_found.ts";
import { authenticate } from "./auth/authenticate.ts";
import { DEFAULT_BODY_LIMIT, readRequest } from "./request/read_request.ts";
import { decide } from "./policy/decide.ts";
import { rateLimitHeaders } from "./policy/rate_headers.ts";
import { budgetChecksFor } from "./policy/budgets.ts";
import { minDefinedLimit } from "./policy/limits.ts";
import { forward } from "./forward/respond.ts";
import { logPrompts } from "./observe/prompt_log.ts";
import type { Context, Runtime, Shared, Trace } from "./runtime.ts";

/**
 * How long a request body Butler reads to decide on may take to arrive
 * before the request is answered 408 (bodies streamed through unread, such
 * as blob uploads, have no deadline).
 */
export const DEFAULT_BODY_READ_TIMEOUT_MS = 60_000;

/**
 * Creates the request handler. `current` is read once per request, so a
 * request finishes under the policy it started with even across a reload.
 */
export function createHandler(
  current: () => Runtime,
  shared: Shared,
  options: { shutdownSignal?: AbortSignal; bodyReadTimeoutMs?: number } = {},
): (request: Request, info: Deno.ServeHandlerInfo) => Promise<Response> {
  const shutdownSignal = options.shutdownSignal ?? new AbortController().signal;
  const bodyReadTimeoutMs = options.bodyReadTimeoutMs ??
    DEFAULT_BODY_READ_TIMEOUT_MS;
  const exchanges = new Set<AbortController>();
  shutdownSignal.addEventListener("abort", () => {
    for (const exchange of exchanges) exchange.abort(shutdownSignal.reason);
  }, { once: true });
  return async function handle(request, info) {
    const runtime = current();
    const trace: Trace = { start: performance.now(), route: "-", bytesIn: 0 };
    try {
      const response = await handleRequest(request, info, {
        runtime,
        shared,
        trace,
        shutdownSignal,
        exchanges,
        bodyReadTimeoutMs,
      });
      return withCorsHeaders(
        request,
        response,
        runtime.policy.corsAllowOrigins,
      );
    } catch (error) {
      shared.log.error("internal error", {
        route: trace.route,
        error: error instanceof Error ? error.message : String(error),
      });
      return withCorsHeaders(
        request,
        renderRefusal(
          { status: 500, reason: "internal_error", message: "internal error" },
          "native",
        ),
        runtime.policy.corsAllowOrigins,
      );
    }
  };
}

async function handleRequest(
  request: Request,
  info: Deno.ServeHandlerInfo,
  context: Context,
): Promise<Response> {
  const { runtime, shared, trace } = context;
  const { policy } = runtime;

  // 1. Route: a CORS preflight is answered here, before authentication (it
  // carries no credentials) and never forwarded; then Butler's own routes,
  // then the Ollama table, byte for byte.
  if (isPreflight(request)) {
    const answer = answerPreflight(request, policy.corsAllowOrigins);
    if (!isRefusal(answer)) return answer;
    return refusedBeforeRoute(answer, { request, shared });
  }
  const own = await ownRoute(request, { info, context });
  if (own !== undefined) return own;
  const match = matchRoute(request.method, request.url);
  if (match === undefined) {
    return refusedBeforeRoute(
      { status: 404, reason: "unknown_route", message: "404 page not found" },
      { request, shared },
    );
  }
  const { route } = match;
  trace.route = route.label;
  const gate = routeGate(match, policy);
  if (gate !== undefined) return refused(gate, match, context);

  // 2. Authenticate.
  const identity = await authenticate(request.headers, runtime);
  if (isRefusal(identity)) return refused(identity, match, context);
  trace.identity = identity;

  // 3. Rate limits, before any work on the body.
  const rateChecks = [
    ...(policy.globalRateLimit
      ? [{ key: "global", rate: policy.globalRateLimit }]
      : []),
    ...identity.subjects.flatMap((s) =>
      s.policy.rateLimit ? [{ key: s.key, rate: s.policy.rateLimit }] : []
    ),
  ];
  let rateHeaders: Record<string, string> = {};
  if (rateChecks.length > 0) {
    const verdict = shared.rate.takeAll(rateChecks);
    // Named for the limit that binds: "global", or the kind of subject
    // ("client", "user", "oidc"), so each policy keeps one name.
    rateHeaders = rateLimitHeaders(
      verdict.key === "global"
        ? "global"
        : (verdict.key ?? "limit").split(":")[0],
      verdict,
    );
    // Every answer from here on says where the caller stands, refusals too.
    trace.rateHeaders = rateHeaders;
    if (!verdict.allowed) {
      return refused(
        {
          status: 429,
          reason: "rate_limited",
          message:
            `rate limit exceeded; retry in ${verdict.retryAfterSeconds} s`,
          headers: rateHeaders,
        },
        match,
        context,
      );
    }
  }

  // 4. Read the body as Ollama will.
  const limit = minDefinedLimit(
    identity.subjects.map((s) => s.policy.maxRequestBytes),
  );
  const declared = request.headers.get("content-length");
  if (limit !== undefined && declared !== null && Number(declared) > limit) {
    return refused(
      {
        status: 413,
        reason: "body_too_large",
        message:
          `request body of ${declared} bytes exceeds the limit of ${limit}`,
      },
      match,
      context,
    );
  }
  // A client trickling its body gets 408 at the deadline instead of holding
  // its connection and buffer for as long as it likes. A route whose body
  // is not read (GET /api/version) needs no deadline and no timer.
  const bodyDeadline = route.readsBody && request.body !== null
    ? new AbortController()
    : undefined;
  const bodyTimer = bodyDeadline === undefined ? undefined : setTimeout(
    () => bodyDeadline.abort(),
    context.bodyReadTimeoutMs,
  );
  let read;
  try {
    read = await readRequest(request, {
      match,
      limit: limit ?? DEFAULT_BODY_LIMIT,
      signal: bodyDeadline?.signal,
    });
  } finally {
    if (bodyTimer !== undefined) clearTimeout(bodyTimer);
  }
  if (isRefusal(read)) return refused(read, match, context);
  trace.bytesIn = read.bytesIn;

  // 5. Decide, within what is left of the day's token budgets. The budget
  // is reserved in the same synchronous step as it is checked, so requests
  // in flight together cannot overspend it.
  const budgetChecks = route.kind === "generate"
    ? budgetChecksFor(identity.subjects)
    : [];
  const grant = shared.budgets.admit(budgetChecks);
  const decision = decide(read, identity, {
    budgetRemaining: isRefusal(grant) ? undefined : grant.remaining,
  });
  // A request the policy refuses is told so, whatever its budget.
  if (isRefusal(decision)) return refused(decision, match, context);
  if (isRefusal(grant)) return refused(grant, match, context);
  const reservation = shared.budgets.reserve(
    budgetChecks,
    decision.budgetReservation ?? 0,
  );
  trace.model = decision.models[0]?.display;
  if (policy.logPrompts && read.body !== undefined) {
    logPrompts(read.body, { context, route: route.pattern });
  }

  // 6. Concurrency: the slot is taken before forwarding.
  const concurrencyChecks = [
    ...(policy.globalMaxConcurrent
      ? [{ key: "global", limit: policy.globalMaxConcurrent }]
      : []),
    ...identity.subjects.flatMap((s) =>
      s.policy.maxConcurrent
        ? [{ key: s.key, limit: s.policy.maxConcurrent }]
        : []
    ),
  ];
  const release = shared.concurrency.tryAcquire(concurrencyChecks);
  if (release === undefined) {
    reservation.settle(0);
    return refused(
      {
        status: 429,
        reason: "too_many_concurrent",
        message: "too many requests in flight for this client; retry shortly",
        headers: { "retry-after": "1" },
      },
      match,
      context,
    );
  }

  // 7. Forward, and stream the answer back. The exchange ends when the
  // client hangs up or the shutdown grace period ends, whichever is first.
  const exchange = new AbortController();
  context.exchanges.add(exchange);
  request.signal.addEventListener(
    "abort",
    () => exchange.abort(request.signal.reason),
    { once: true },
  );
  const endExchange = () => {
    release();
    context.exchanges.delete(exchange);
  };
  let answer: Response | Refusal;
  try {
    answer = await forward(request, {
      context,
      match,
      identity,
      decision,
      forwardBytes: read.forwardBytes,
      rateHeaders,
      release: endExchange,
      signal: exchange.signal,
      reservation,
      limit,
    });
  } catch (error) {
    endExchange();
    reservation.settle(0);
    throw error;
  }
  return isRefusal(answer) ? refused(answer, match, context) : answer;
}

/**
 * A refusal before the request matched a route (a preflight from an origin
 * not allowed, a path that is no route): logged with its method, answered
 * natively; an unknown route gets Ollama's own plain-text 404.
 */
function refusedBeforeRoute(
  refusal: Refusal,
  options: { request: Request; shared: Shared },
): Response {
  const { request, shared } = options;
  shared.log.warn("refused", {
    reason: refusal.reason,
    status: refusal.status,
    method: request.method,
    ...refusal.detail,
  });
  shared.metrics.refusals.inc({
    client: "-",
    user: "-",
    auth: "-",
    reason: refusal.reason,
  });
  if (refusal.reason === "unknown_route") return notFound();
  return renderRefusal(refusal, "native");
}

function refused(
  refusal: Refusal,
  match: RouteMatch,
  context: Context,
): Response {
  const { trace, shared } = context;
  if (trace.rateHeaders !== undefined) {
    refusal = {
      ...refusal,
      headers: { ...trace.rateHeaders, ...refusal.headers },
    };
  }
  const client = trace.identity?.client?.name ?? "-";
  // A refusal from authentication may name the person it refused.
  const user = trace.identity?.user ?? detailString(refusal, "user");
  const auth = trace.identity?.auth ?? detailString(refusal, "auth");
  shared.log.warn("refused", {
    reason: refusal.reason,
    status: refusal.status,
    route: match.route.label,
    client: trace.identity?.client?.name,
    user,
    auth,
    model: trace.model,
    ...refusal.detail,
  });
  shared.metrics.refusals.inc({
    client,
    user: user ?? "-",
    auth: auth ?? "-",
    reason: refusal.reason,
  });
  return renderRefusal(refusal, match.route.dialect);
}

function detailString(refusal: Refusal, key: string): string | undefined {
  const value = refusal.detail?.[key];
  return typeof value === "string" ? value : undefined;
}
