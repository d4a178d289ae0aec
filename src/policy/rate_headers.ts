/**
 * The RateLimit header fields of the IETF HTTPAPI draft
 * (draft-ietf-httpapi-ratelimit-headers, versions 08 and later):
 *
 * - `RateLimit-Policy: "name";q=<quota>;w=<window seconds>`: the policy,
 *   under a name that stays the same for each limit;
 * - `RateLimit: "name";r=<remaining>;t=<seconds>`: the state after this
 *   request;
 * - `Retry-After: <seconds>` on a refusal only.
 *
 * The draft defines `t` as the seconds until more quota is available and
 * asks that Retry-After never point earlier than `t`. With GCRA quota comes
 * back continuously, so `t` is the time until the allowance is full again
 * on success, and the time until the next request is allowed on refusal
 * (equal to Retry-After there).
 *
 * @module
 */

import type { RateDecision } from "./rate_limiter.ts";

/**
 * The response headers describing `decision` under the policy `name`.
 * `name` becomes a Structured Field string: `"` and `\` are escaped, and
 * characters a header cannot carry (outside printable ASCII) become `_`.
 *
 * @example
 * ```ts
 * rateLimitHeaders("client", decision);
 * // { "RateLimit-Policy": '"client";q=60;w=60',
 * //   "RateLimit": '"client";r=59;t=1' }
 * ```
 */
export function rateLimitHeaders(
  name: string,
  decision: RateDecision,
): Record<string, string> {
  const item = structuredFieldString(name);
  const seconds = decision.allowed
    ? decision.resetSeconds
    : decision.retryAfterSeconds;
  const headers: Record<string, string> = {
    "RateLimit-Policy":
      `${item};q=${decision.limit};w=${decision.periodSeconds}`,
    "RateLimit": `${item};r=${decision.remaining};t=${seconds}`,
  };
  if (!decision.allowed) {
    headers["Retry-After"] = String(decision.retryAfterSeconds);
  }
  return headers;
}

function structuredFieldString(text: string): string {
  let body = "";
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (char === '"' || char === "\\") body += `\\${char}`;
    else if (code >= 0x20 && code <= 0x7e) body += char;
    else body += "_";
  }
  return `"${body}"`;
}
