/**
 * The `/metrics` bearer check: the scheme is matched without case (as for
 * API keys, RFC 9110 §11.1), and the token is compared by its SHA-256 digest
 * in constant time, so the answer time does not tell how much of the token
 * was right.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";

// The scheme, white space, then the token: everything up to trailing white
// space (a configured bearer may itself contain spaces).
const BEARER = /^bearer[ \t]+(.*?)[ \t]*$/is;

/**
 * True when the `Authorization` header value carries `bearer` (the
 * configured `metrics.bearer`).
 *
 * @example
 * ```ts
 * metricsAuthorized(request.headers.get("authorization"), "s3cret"); // …
 * ```
 */
export function metricsAuthorized(
  authorization: string | null,
  bearer: string,
): boolean {
  const presented = authorization === null
    ? undefined
    : BEARER.exec(authorization)?.[1];
  if (presented === undefined || presented === "") return false;
  return timingSafeEqual(digest(presented), digest(bearer));
}

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text).digest();
}
