/**
 * The request path, one step after the other: route, authenticate, limit,
 * read the body as Ollama would, decide, forward, stream back, account.
 * The handler is a function from `Request` to `Response`; `serveButler`
 * puts it on a socket.
 *
 * @module
 */

import type { Policy } from "./config/policy.ts";
import { isRefusal, type Refusal } from "./errors/refusal.ts";
import { renderRefusal } from "./errors/render.ts";
import { matchRoute, type RouteMatch } from "./routes/table.ts";
import { ApiKeyIndex } from "./auth/api_keys.ts";
import { authenticate } from "./auth/authenticate.ts";
import type { Identity } from "./auth/identity.ts";
import type { OidcVerifier } from "./auth/oidc.ts";
import { handleLogin } from "./auth/login.ts";
import { LoginThrottle } from "./auth/login_throttle.ts";
import {
  DEFAULT_BODY_LIMIT,
  limitStream,
  readRequest,
} from "./request/read_request.ts";
import { serializeJson } from "./request/go_json.ts";
import { decide, type Decision, modelAllowedForAll } from "./policy/decide.ts";
import { RateLimiter } from "./policy/rate_limiter.ts";
import { rateLimitHeaders } from "./policy/rate_headers.ts";
import { ConcurrencyLimiter } from "./policy/concurrency.ts";
import { minDefinedLimit } from "./policy/limits.ts";
import { fetchUpstream } from "./forward/upstream.ts";
import {
  clientResponseHeaders,
  isStreamingContentType,
  upstreamRequestHeaders,
} from "./forward/headers.ts";
import { filterListing } from "./forward/list_filter.ts";
import { type BodyEnd, observeBody } from "./forward/observe_body.ts";
import { type TokenCounts, tokenTap } from "./forward/token_tap.ts";
import { streamCap } from "./forward/stream_cap.ts";
import { tapDialectFor } from "./forward/tap_dialect.ts";
import type { Logger } from "./observe/log.ts";
import type { ButlerMetrics } from "./observe/metrics.ts";
import { healthResponse, upstreamReachable } from "./observe/health.ts";

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
}

/** Builds the per-policy part of the runtime. */
export function createRuntime(
  policy: Policy,
  options: { oidc?: OidcVerifier } = {},
): Runtime {
  return { policy, keys: new ApiKeyIndex(policy.clients), oidc: options.oidc };
}

const NOT_FOUND = () =>
  new Response("404 page not found", {
    status: 404,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });

/** Per-request facts gathered along the way, for the log line. */
interface Trace {
  readonly start: number;
  route: string;
  identity?: Identity;
  model?: string;
  bytesIn: number;
}

/**
 * Creates the request handler. `current` is read once per request, so a
 * request finishes under the policy it started with even across a reload.
 */
export function createHandler(
  current: () => Runtime,
  shared: Shared,
  options: { shutdownSignal?: AbortSignal } = {},
): (request: Request, info: Deno.ServeHandlerInfo) => Promise<Response> {
  const shutdownSignal = options.shutdownSignal ?? new AbortController().signal;
  return async function handle(request, info) {
    const runtime = current();
    const trace: Trace = { start: performance.now(), route: "-", bytesIn: 0 };
    try {
      const response = await handleRequest(request, info, {
        runtime,
        shared,
        trace,
        shutdownSignal,
      });
      return response;
    } catch (error) {
      shared.log.error("internal error", {
        route: trace.route,
        error: error instanceof Error ? error.message : String(error),
      });
      return renderRefusal(
        { status: 500, reason: "internal_error", message: "internal error" },
        "native",
      );
    }
  };
}

interface Context {
  readonly runtime: Runtime;
  readonly shared: Shared;
  readonly trace: Trace;
  /** Aborts every upstream request when the shutdown grace period ends. */
  readonly shutdownSignal: AbortSignal;
}

async function handleRequest(
  request: Request,
  info: Deno.ServeHandlerInfo,
  context: Context,
): Promise<Response> {
  const { runtime, shared, trace } = context;
  const { policy } = runtime;

  // 1. Route: Butler's own routes, then the Ollama table, byte for byte.
  const own = await ownRoute(request, info, context);
  if (own !== undefined) return own;
  const match = matchRoute(request.method, request.url);
  if (match === undefined) {
    shared.log.warn("refused", {
      reason: "unknown_route",
      status: 404,
      method: request.method,
    });
    shared.metrics.refusals.inc({ client: "-", reason: "unknown_route" });
    return NOT_FOUND();
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
    rateHeaders = rateLimitHeaders("butler", verdict);
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
  const read = await readRequest(request, {
    match,
    limit: limit ?? DEFAULT_BODY_LIMIT,
  });
  if (isRefusal(read)) return refused(read, match, context);
  trace.bytesIn = read.bytesIn;

  // 5. Decide.
  const decision = decide(read, identity);
  if (isRefusal(decision)) return refused(decision, match, context);
  trace.model = decision.models[0]?.display;

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

  // 7. Forward, and stream the answer back.
  try {
    return await forward(request, {
      context,
      match,
      identity,
      decision,
      forwardBytes: read.forwardBytes,
      rateHeaders,
      release,
      limit: limit ?? DEFAULT_BODY_LIMIT,
    });
  } catch (error) {
    release();
    throw error;
  }
}

/** Butler's own routes: health, metrics, login. */
async function ownRoute(
  request: Request,
  info: Deno.ServeHandlerInfo,
  context: Context,
): Promise<Response | undefined> {
  const { runtime, shared } = context;
  const path = new URL(request.url).pathname;
  if (request.url.endsWith("/healthz") && path === "/healthz") {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return NOT_FOUND();
    }
    const up = await upstreamReachable(runtime.policy.upstream);
    shared.metrics.upstreamUp.set({}, up ? 1 : 0);
    return healthResponse(up, { oidc: runtime.oidc?.state });
  }
  if (request.url.endsWith("/metrics") && path === "/metrics") {
    if (request.method !== "GET") return NOT_FOUND();
    const bearer = runtime.policy.metricsBearer;
    if (
      bearer !== undefined &&
      request.headers.get("authorization") !== `Bearer ${bearer}`
    ) {
      return new Response("unauthorized\n", { status: 401 });
    }
    return new Response(shared.renderMetrics(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  }
  if (request.url.endsWith("/auth/login") && path === "/auth/login") {
    if (request.method !== "POST") return NOT_FOUND();
    const address = info.remoteAddr.transport === "tcp"
      ? info.remoteAddr.hostname
      : "local";
    return await handleLogin(request, {
      policy: runtime.policy,
      throttle: shared.throttle,
      clientAddress: address,
    });
  }
  return undefined;
}

/** Account and internet routes pass only when the config enables them. */
function routeGate(match: RouteMatch, policy: Policy): Refusal | undefined {
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

function refused(
  refusal: Refusal,
  match: RouteMatch,
  context: Context,
): Response {
  const { trace, shared } = context;
  const client = trace.identity?.client?.name ?? "-";
  shared.log.warn("refused", {
    reason: refusal.reason,
    status: refusal.status,
    route: match.route.label,
    client: trace.identity?.client?.name,
    user: trace.identity?.user,
    auth: trace.identity?.auth,
    model: trace.model,
    ...refusal.detail,
  });
  shared.metrics.refusals.inc({ client, reason: refusal.reason });
  return renderRefusal(refusal, match.route.dialect);
}

interface ForwardInput {
  readonly context: Context;
  readonly match: RouteMatch;
  readonly identity: Identity;
  readonly decision: Decision;
  readonly forwardBytes: Uint8Array | null;
  readonly rateHeaders: Record<string, string>;
  readonly release: () => void;
  /** Body limit for bodies streamed through unread. */
  readonly limit: number;
}

async function forward(
  request: Request,
  input: ForwardInput,
): Promise<Response> {
  const { context, match, identity, decision, release } = input;
  const { runtime, shared, trace } = context;
  const { route } = match;
  const clientName = identity.client?.name ?? "-";

  const body: BodyInit | null = decision.rewrittenBody !== undefined
    ? serializeJson(decision.rewrittenBody)
    : input.forwardBytes !== null
    ? input.forwardBytes as Uint8Array<ArrayBuffer>
    : streamedBody(request, input.limit);
  const upstream = await fetchUpstream({
    method: request.method,
    target: match.path + (route.kind === "transcribe" ? match.query : ""),
    headers: upstreamRequestHeaders(request.headers, {
      client: identity.client?.name,
      user: identity.user,
    }),
    body,
    clientSignal: AbortSignal.any([request.signal, context.shutdownSignal]),
  }, {
    upstream: runtime.policy.upstream,
    timeoutMs: runtime.policy.upstreamTimeoutMs,
  });
  if (isRefusal(upstream)) {
    release();
    shared.metrics.upstreamUp.set(
      {},
      upstream.reason === "upstream_unavailable" ? 0 : 1,
    );
    return refused(upstream, match, context);
  }
  const ttfb = (performance.now() - trace.start) / 1000;
  shared.metrics.timeToFirstByte.observe({ route: route.label }, ttfb);
  shared.metrics.inFlightRequests.inc({ client: clientName });

  // Listings show only what the caller may use.
  if (route.kind === "list_models" || route.kind === "list_running") {
    return await filteredListing(upstream, input);
  }

  const contentType = upstream.headers.get("content-type");
  const streaming = isStreamingContentType(contentType);
  if (streaming) shared.metrics.inFlightStreams.inc({ client: clientName });
  let tokens: TokenCounts | undefined;
  let stream: ReadableStream<Uint8Array> | null = upstream.body;
  let changed = false;
  const tap = route.kind === "generate"
    ? tapDialectFor(route.pattern)
    : undefined;
  if (stream !== null && tap !== undefined) {
    const format = !streaming
      ? "json" as const
      : contentType!.includes("ndjson")
      ? "ndjson" as const
      : "sse" as const;
    stream = stream.pipeThrough(tokenTap({
      format,
      dialect: tap,
      onDone: (counts) => tokens = counts,
    }));
    // Some Ollama versions ignore the cap on OpenAI routes: end the stream
    // the way the dialect ends a length-limited answer.
    if (format !== "json" && decision.generationCap !== undefined) {
      changed = true;
      stream = stream.pipeThrough(streamCap({
        dialect: tap,
        format,
        cap: decision.generationCap,
        onCut: () =>
          shared.log.info("stream cut at cap", {
            route: route.label,
            client: identity.client?.name,
            cap: decision.generationCap,
          }),
      }));
    }
  }

  const finish = (end: BodyEnd, bytesOut: number) => {
    release();
    shared.metrics.inFlightRequests.dec({ client: clientName });
    if (streaming) shared.metrics.inFlightStreams.dec({ client: clientName });
    const duration = performance.now() - trace.start;
    shared.metrics.requests.inc({
      client: clientName,
      model: trace.model ?? "-",
      route: route.label,
      status: String(upstream.status),
    });
    shared.metrics.requestDuration.observe(
      { route: route.label },
      duration / 1000,
    );
    if (tokens?.prompt !== undefined) {
      shared.metrics.tokens.inc({
        client: clientName,
        model: trace.model ?? "-",
        kind: "prompt",
      }, tokens.prompt);
    }
    const generated = tokens?.generated ?? tokens?.contentChunks;
    if (generated) {
      shared.metrics.tokens.inc({
        client: clientName,
        model: trace.model ?? "-",
        kind: "generated",
      }, generated);
    }
    shared.log.info("response", {
      client: identity.client?.name,
      user: identity.user,
      auth: identity.auth,
      model: trace.model,
      route: route.label,
      status: upstream.status,
      duration_ms: Math.round(duration),
      bytes_in: trace.bytesIn,
      bytes_out: bytesOut,
      end,
      prompt_tokens: tokens?.prompt,
      generated_tokens: generated,
    });
  };

  const headers = clientResponseHeaders(upstream.headers, {
    bodyChanged: changed,
  });
  for (const [name, value] of Object.entries(input.rateHeaders)) {
    headers.set(name, value);
  }
  if (streaming) headers.set("x-accel-buffering", "no");
  if (stream === null) {
    finish("complete", 0);
    return new Response(null, { status: upstream.status, headers });
  }
  return new Response(observeBody(stream, finish), {
    status: upstream.status,
    headers,
  });
}

async function filteredListing(
  upstream: Response,
  input: ForwardInput,
): Promise<Response> {
  const { context, match, identity, release } = input;
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
      return refused(
        {
          status: 502,
          reason: "bad_upstream_listing",
          message: "upstream sent a model listing Butler cannot read",
        },
        match,
        context,
      );
    }
    const headers = clientResponseHeaders(upstream.headers, {
      bodyChanged: true,
    });
    headers.set("content-type", "application/json; charset=utf-8");
    for (const [name, value] of Object.entries(input.rateHeaders)) {
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
      model: "-",
      route: match.route.label,
      status: String(upstream.status),
    });
    return new Response(filtered, { status: upstream.status, headers });
  } finally {
    release();
    context.shared.metrics.inFlightRequests.dec({ client: clientName });
  }
}

/** The client's body for routes Butler does not read, bounded. */
function streamedBody(request: Request, limit: number): BodyInit | null {
  if (request.method === "GET" || request.method === "HEAD") return null;
  return request.body === null ? null : limitStream(request.body, limit);
}
