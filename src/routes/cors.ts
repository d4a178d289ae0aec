/**
 * CORS for browser clients (extensions, single-page chat apps). For the
 * origins in `cors.allow_origins` Butler answers preflight requests itself
 * and labels every response, refusals included, so the page can read it.
 * Any other origin gets no CORS header at all, and its browser keeps the
 * page from sending credentials or reading an answer.
 *
 * A preflight carries no credentials (the Fetch standard leaves them out),
 * so it is answered before authentication and never forwarded. Butler
 * authenticates with headers, never cookies, so it never sends
 * `Access-Control-Allow-Credentials`.
 *
 * @module
 */

import type { Refusal } from "../errors/refusal.ts";
import { ROUTES } from "./table.ts";

/** The methods of the route table (Butler's own routes use the same). */
export const CORS_ALLOW_METHODS: readonly string[] = Object.freeze([
  ...new Set(ROUTES.map((route) => route.method)),
]);

/**
 * Request headers a page may send: the ones the OpenAI (`openai`),
 * Anthropic (`@anthropic-ai/sdk`) and Ollama (`ollama/browser`) JavaScript
 * clients set that are not CORS-safelisted, plus Butler's own. The
 * safelisted ones (`Accept`, `Content-Type` with a form or text type) need
 * no listing.
 */
export const CORS_ALLOW_HEADERS: readonly string[] = Object.freeze([
  // Credentials: Butler's keys and user tokens, as every client sends them.
  "authorization",
  "x-api-key",
  "x-butler-user-token",
  // `application/json` is not a safelisted content type.
  "content-type",
  // Anthropic SDK.
  "anthropic-version",
  "anthropic-beta",
  "anthropic-dangerous-direct-browser-access",
  // OpenAI SDK.
  "openai-organization",
  "openai-project",
  // Both SDKs describe themselves and their retries in these.
  "x-stainless-arch",
  "x-stainless-lang",
  "x-stainless-os",
  "x-stainless-package-version",
  "x-stainless-runtime",
  "x-stainless-runtime-version",
  "x-stainless-retry-count",
  "x-stainless-timeout",
  "x-stainless-helper",
  "x-stainless-helper-method",
  // The Ollama client sets User-Agent; browsers that let a page set it
  // (Firefox) ask for it in the preflight. Chromium drops it silently.
  "user-agent",
]);

/**
 * Response headers a page may read beyond the safelisted ones: Butler's
 * rate-limit state and when to retry.
 */
export const CORS_EXPOSE_HEADERS: readonly string[] = Object.freeze([
  "RateLimit",
  "RateLimit-Policy",
  "Retry-After",
]);

/**
 * How long a browser may reuse a preflight answer, in seconds. Chromium
 * caps it at 7200, so a longer value would only read as a promise.
 */
export const PREFLIGHT_MAX_AGE_SECONDS = 7200;

/** True for a CORS preflight: `OPTIONS` with `Origin` and a requested method. */
export function isPreflight(request: Request): boolean {
  return request.method === "OPTIONS" &&
    request.headers.has("origin") &&
    request.headers.has("access-control-request-method");
}

/**
 * The answer to a preflight: 204 with what a page may send for a listed
 * origin, a 403 refusal (rendered without CORS headers, so the browser
 * blocks the request) for any other. The path is not looked at: the real
 * request that follows is routed as usual, and an unknown path is a 404
 * the page can read.
 *
 * @example
 * ```ts
 * const answer = answerPreflight(request, policy.corsAllowOrigins);
 * if (isRefusal(answer)) return renderRefusal(answer, "native");
 * return answer;
 * ```
 */
export function answerPreflight(
  request: Request,
  allowOrigins: readonly string[],
): Response | Refusal {
  const origin = request.headers.get("origin") ?? "";
  if (!allowOrigins.includes(origin)) {
    return {
      status: 403,
      reason: "cors_origin_not_allowed",
      message: `origin ${JSON.stringify(origin)} is not in cors.allow_origins`,
      detail: { origin },
    };
  }
  return new Response(null, {
    status: 204,
    headers: {
      "access-control-allow-methods": CORS_ALLOW_METHODS.join(", "),
      "access-control-allow-headers": CORS_ALLOW_HEADERS.join(", "),
      "access-control-max-age": String(PREFLIGHT_MAX_AGE_SECONDS),
    },
  });
}

/**
 * With CORS configured, adds `Vary: Origin` to every response, and
 * `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers` when
 * the request came from a listed origin; without CORS, returns `response`
 * unchanged. A response whose headers are immutable is copied (the body
 * stream is passed on, not read).
 */
export function withCorsHeaders(
  request: Request,
  response: Response,
  allowOrigins: readonly string[],
): Response {
  // With CORS on, every answer depends on Origin (allowed or not, or none):
  // a cache in between must not hand one origin's answer to another.
  if (allowOrigins.length === 0) return response;
  const origin = request.headers.get("origin");
  const allowed = origin !== null && allowOrigins.includes(origin);

  let labelled = response;
  try {
    addVaryOrigin(labelled.headers);
  } catch {
    // Some responses have immutable headers: copy them into a new one.
    labelled = new Response(response.body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
    addVaryOrigin(labelled.headers);
  }
  if (!allowed) return labelled;
  labelled.headers.set("access-control-allow-origin", origin);
  labelled.headers.set(
    "access-control-expose-headers",
    CORS_EXPOSE_HEADERS.join(", "),
  );
  return labelled;
}

function addVaryOrigin(headers: Headers): void {
  const vary = headers.get("vary") ?? "";
  if (vary.trim() !== "*" && !/(^|,)\s*origin\s*(,|$)/i.test(vary)) {
    headers.set("vary", vary === "" ? "Origin" : `${vary}, Origin`);
  }
}
