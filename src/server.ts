/**
 * The request path, one step after the other: route, authenticate, limit,
 * read the body as Ollama would, decide, forward, stream back, account.
 * The handler is a function from `Request` to `Response`; `serveButler`
 * puts it on a socket.
 *
 * @module
 */

import type { Policy } from "./config/policy.ts";
import { isRefusal, type Refusal, refuse } from "./errors/refusal.ts";
import { renderRefusal } from "./errors/render.ts";
import { matchRoute, type RouteMatch } from "./routes/table.ts";
import {
  answerPreflight,
  isPreflight,
  withCorsHeaders,
} from "./routes/cors.ts";
import { ApiKeyIndex } from "./auth/api_keys.ts";
import { authenticate } from "./auth/authenticate.ts";
import type { Identity } from "./auth/identity.ts";
import type { OidcVerifier } from "./auth/oidc.ts";
import { decodeJwt } from "jose";
import { handleLogin } from "./auth/login.ts";
import { LoginThrottle } from "./auth/login_throttle.ts";
import {
  DEFAULT_BODY_LIMIT,
  limitStream,
  readRequest,
} from "./request/read_request.ts";
import { type JsonNode, serializeJson } from "./request/go_json.ts";
import { promptTexts } from "./policy/prompt_texts.ts";
import { decide, type Decision, modelAllowedForAll } from "./policy/decide.ts";
import { RateLimiter } from "./policy/rate_limiter.ts";
import { rateLimitHeaders } from "./policy/rate_headers.ts";
import { ConcurrencyLimiter } from "./policy/concurrency.ts";
import {
  budgetChecksFor,
  type BudgetReservation,
  type TokenBudgets,
} from "./policy/budgets.ts";
import { minDefinedLimit } from "./policy/limits.ts";
import { fetchUpstream } from "./forward/upstream.ts";
import {
  clientResponseHeaders,
  isStreamingContentType,
  upstreamRequestHeaders,
} from "./forward/headers.ts";
import { compactReads } from "./forward/compact_reads.ts";
import { filterListing } from "./forward/list_filter.ts";
import { type BodyEnd, observeBody } from "./forward/observe_body.ts";
import { streamErrorEnding } from "./forward/stream_error.ts";
import {
  countTokensInBody,
  type TokenCounts,
  tokenTap,
} from "./forward/token_tap.ts";
import { streamCap } from "./forward/stream_cap.ts";
import { tapDialectFor } from "./forward/tap_dialect.ts";
import { usageStrip } from "./forward/usage_strip.ts";
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

const NOT_FOUND = () =>
  new Response("404 page not found", {
    status: 404,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });

/**
 * Non-streamed answers up to this size (by their `content-length`) are read
 * whole before being sent on; larger ones stream through.
 */
const BUFFERED_ANSWER_BYTES = 256 * 1024;

/**
 * How long a request body Butler reads to decide on may take to arrive
 * before the request is answered 408 (bodies streamed through unread, such
 * as blob uploads, have no deadline).
 */
export const DEFAULT_BODY_READ_TIMEOUT_MS = 60_000;

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

interface Context {
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
    shared.log.warn("refused", {
      reason: answer.reason,
      status: answer.status,
      method: request.method,
      ...answer.detail,
    });
    shared.metrics.refusals.inc({
      client: "-",
      user: "-",
      auth: "-",
      reason: answer.reason,
    });
    return renderRefusal(answer, "native");
  }
  const own = await ownRoute(request, info, context);
  if (own !== undefined) return own;
  const match = matchRoute(request.method, request.url);
  if (match === undefined) {
    shared.log.warn("refused", {
      reason: "unknown_route",
      status: 404,
      method: request.method,
    });
    shared.metrics.refusals.inc({
      client: "-",
      user: "-",
      auth: "-",
      reason: "unknown_route",
    });
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
  // A client trickling its body gets 408 at the deadline instead of holding
  // its connection and buffer for as long as it likes.
  const bodyDeadline = new AbortController();
  const bodyTimer = setTimeout(
    () => bodyDeadline.abort(),
    context.bodyReadTimeoutMs,
  );
  const read = await readRequest(request, {
    match,
    limit: limit ?? DEFAULT_BODY_LIMIT,
    signal: bodyDeadline.signal,
  }).finally(() => clearTimeout(bodyTimer));
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
  try {
    return await forward(request, {
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
}

/** With `log_prompts: true`, the texts a request sends to the model. */
function logPrompts(
  body: JsonNode,
  options: { context: Context; route: string },
): void {
  const { trace, shared } = options.context;
  try {
    shared.log.info("prompts", {
      client: trace.identity?.client?.name,
      user: trace.identity?.user,
      model: trace.model,
      route: options.route,
      prompts: promptTexts(options.route, body),
    });
  } catch {
    // The decide step already read these texts; nothing new can fail here.
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
    const response = await handleLogin(request, {
      policy: runtime.policy,
      throttle: shared.throttle,
      clientAddress: address,
    });
    await logLogin(response, { shared, address });
    return response;
  }
  return undefined;
}

const LOGIN_REFUSAL_REASONS: Readonly<Record<number, string>> = {
  400: "bad_login_body",
  401: "invalid_credentials",
  404: "unknown_route",
  413: "body_too_large",
  429: "login_throttled",
};

/**
 * One line per login attempt. The username is logged only once the password
 * matched: a failed attempt's username may be a password typed in the
 * wrong field.
 */
async function logLogin(
  response: Response,
  options: { shared: Shared; address: string },
): Promise<void> {
  const { shared, address } = options;
  if (response.status === 200) {
    const { token } = await response.clone().json();
    shared.log.info("login", {
      route: "/auth/login",
      status: 200,
      user: decodeJwt(token).sub,
      auth: "jwt",
    });
    return;
  }
  const reason = LOGIN_REFUSAL_REASONS[response.status] ?? "login_failed";
  shared.log.warn("refused", {
    reason,
    status: response.status,
    route: "/auth/login",
    address,
  });
  shared.metrics.refusals.inc({ client: "-", user: "-", auth: "-", reason });
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
  shared.metrics.refusals.inc({
    client,
    user: trace.identity?.user ?? "-",
    auth: trace.identity?.auth ?? "-",
    reason: refusal.reason,
  });
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
  /** Aborted when the client hangs up or the shutdown grace period ends. */
  readonly signal: AbortSignal;
  /** Settled to the generated count when the answer ends. */
  readonly reservation: BudgetReservation;
  /**
   * The policies' `max_request_bytes` for bodies streamed through unread
   * (model blobs); undefined: no limit, since blobs are model-sized.
   */
  readonly limit: number | undefined;
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
    clientSignal: input.signal,
  }, {
    upstream: runtime.policy.upstream,
    timeoutMs: runtime.policy.upstreamTimeoutMs,
  });
  if (isRefusal(upstream)) {
    release();
    input.reservation.settle(0);
    shared.metrics.upstreamUp.set(
      {},
      upstream.reason === "upstream_unavailable" ? 0 : 1,
    );
    return refused(upstream, match, context);
  }
  shared.metrics.upstreamUp.set({}, 1);
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
  // The tap reports once the whole pipe has stopped: after a client hang-up
  // that is a little later than the body's end, and accounting waits for it.
  let countsArrived = () => {};
  const tapDone = new Promise<void>((resolve) => countsArrived = resolve);
  let stream: ReadableStream<Uint8Array> | null = upstream.body;
  let changed = false;
  const tap = route.kind === "generate"
    ? tapDialectFor(route.pattern)
    : undefined;
  // A small answer that is not a stream is read whole and sent as bytes:
  // no stream layers, and Deno writes it with its content length at once.
  const buffered = !streaming && stream !== null &&
    Number(upstream.headers.get("content-length") ?? NaN) <=
      BUFFERED_ANSWER_BYTES;
  if (stream !== null && !buffered) stream = compactReads(stream);
  if (stream !== null && tap !== undefined && !buffered) {
    const format = !streaming
      ? "json" as const
      : contentType!.includes("ndjson")
      ? "ndjson" as const
      : "sse" as const;
    stream = stream.pipeThrough(tokenTap({
      format,
      dialect: tap,
      onDone: (counts) => {
        tokens = counts;
        countsArrived();
      },
    }));
    // Usage Butler asked for on the client's behalf: the tap above has
    // read it; the client gets the stream it would have had without Butler.
    if (format === "sse" && decision.stripUsage) {
      changed = true;
      stream = stream.pipeThrough(usageStrip());
    }
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
  } else {
    countsArrived();
  }

  const finish = (end: BodyEnd, bytesOut: number) => {
    release();
    if (end === "upstream_error") {
      shared.metrics.upstreamBroken.inc({ route: route.label });
    }
    shared.metrics.inFlightRequests.dec({ client: clientName });
    if (streaming) shared.metrics.inFlightStreams.dec({ client: clientName });
    const duration = performance.now() - trace.start;
    shared.metrics.requests.inc({
      client: clientName,
      user: identity.user ?? "-",
      auth: identity.auth,
      model: trace.model ?? "-",
      route: route.label,
      status: String(upstream.status),
    });
    shared.metrics.requestDuration.observe(
      { route: route.label },
      duration / 1000,
    );
    void tapDone.then(() => {
      if (tokens?.prompt !== undefined) {
        shared.metrics.tokens.inc({
          client: clientName,
          user: identity.user ?? "-",
          auth: identity.auth,
          model: trace.model ?? "-",
          kind: "prompt",
        }, tokens.prompt);
      }
      const generated = tokens?.generated ?? tokens?.contentChunks;
      input.reservation.settle(generated ?? 0);
      if (generated) {
        shared.metrics.tokens.inc({
          client: clientName,
          user: identity.user ?? "-",
          auth: identity.auth,
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
  if (buffered) {
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await upstream.bytes();
    } catch {
      finish("upstream_error", 0);
      return renderRefusal(
        refuse(502, "upstream_error", "upstream broke off its answer"),
        route.dialect,
      );
    }
    if (tap !== undefined) tokens = countTokensInBody(bytes, tap);
    finish("complete", bytes.byteLength);
    return new Response(bytes, { status: upstream.status, headers });
  }
  // A stream the upstream breaks off ends with an error in its dialect.
  const framing = !streaming
    ? undefined
    : contentType!.includes("ndjson")
    ? "ndjson" as const
    : "sse" as const;
  const errorEnding = framing === undefined
    ? undefined
    : (tail: Uint8Array) =>
      streamErrorEnding(tail, {
        dialect: route.dialect,
        format: framing,
        routePattern: route.pattern,
        message: "the upstream Ollama server broke off the answer",
      });
  return new Response(
    observeBody(stream, { onEnd: finish, errorEnding }),
    { status: upstream.status, headers },
  );
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
      user: identity.user ?? "-",
      auth: identity.auth,
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
function streamedBody(
  request: Request,
  limit: number | undefined,
): BodyInit | null {
  if (request.method === "GET" || request.method === "HEAD") return null;
  if (request.body === null || limit === undefined) return request.body;
  return limitStream(request.body, limit);
}
