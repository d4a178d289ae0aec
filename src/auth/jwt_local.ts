/**
 * Tokens Butler issues itself to users listed in the config
 * (`jwt_standalone`): HS256 JWTs signed with `auth.jwt_secret`, with this
 * Butler as issuer and audience. Also the mapping from a failed token
 * verification to a stable reason code, shared with OIDC verification.
 *
 * @module
 */

import { errors, jwtVerify, SignJWT } from "jose";
import type { UserPolicy } from "../config/policy.ts";

/** The `iss` claim of tokens this Butler issues. */
export const LOCAL_TOKEN_ISSUER = "butler";

/** The `aud` claim of tokens this Butler issues. */
export const LOCAL_TOKEN_AUDIENCE = "butler";

/** Seconds of clock skew accepted on `exp`, `nbf` and `iat`. */
export const TOKEN_CLOCK_TOLERANCE_SECONDS = 30;

const LOCAL_TOKEN_ALGORITHM = "HS256";

/**
 * Issues a token for `username`: HS256, `sub` = username, `iat`, and `exp`
 * `expiryMs` after `now` (default: the current time).
 *
 * @example
 * ```ts
 * const { token, expiresAt } = await issueUserToken("alice", {
 *   secret: policy.auth.jwtSecret!,
 *   expiryMs: policy.auth.tokenExpiryMs,
 * });
 * ```
 */
export async function issueUserToken(
  username: string,
  options: { secret: Uint8Array; expiryMs: number; now?: number },
): Promise<{ token: string; expiresAt: string }> {
  const nowSeconds = Math.floor((options.now ?? Date.now()) / 1000);
  const expSeconds = nowSeconds + Math.floor(options.expiryMs / 1000);

  const token = await new SignJWT({})
    .setProtectedHeader({ alg: LOCAL_TOKEN_ALGORITHM, typ: "JWT" })
    .setSubject(username)
    .setIssuer(LOCAL_TOKEN_ISSUER)
    .setAudience(LOCAL_TOKEN_AUDIENCE)
    .setIssuedAt(nowSeconds)
    .setExpirationTime(expSeconds)
    .sign(options.secret);

  return { token, expiresAt: new Date(expSeconds * 1000).toISOString() };
}

/**
 * Verifies signature (HS256 only), issuer, audience and expiry (30 s clock
 * tolerance); then that the user named by `sub` still exists in `users`.
 * Returns the user or a reason code (`token_expired`, `token_user_unknown`,
 * …). `now` replaces the current time, for tests.
 *
 * @example
 * ```ts
 * const result = await verifyUserToken(token, {
 *   secret: policy.auth.jwtSecret!,
 *   users: policy.users,
 * });
 * if ("reason" in result) refuse(401, result.reason, "…");
 * ```
 */
export async function verifyUserToken(
  token: string,
  options: { secret: Uint8Array; users: readonly UserPolicy[]; now?: number },
): Promise<{ user: UserPolicy } | { reason: string }> {
  let subject: unknown;
  try {
    const { payload } = await jwtVerify(token, options.secret, {
      algorithms: [LOCAL_TOKEN_ALGORITHM],
      issuer: LOCAL_TOKEN_ISSUER,
      audience: LOCAL_TOKEN_AUDIENCE,
      requiredClaims: ["sub", "exp"],
      clockTolerance: TOKEN_CLOCK_TOLERANCE_SECONDS,
      currentDate: options.now === undefined
        ? undefined
        : new Date(options.now),
    });
    subject = payload.sub;
  } catch (error) {
    return { reason: reasonForTokenError(error) };
  }

  const user = options.users.find((candidate) => candidate.name === subject);
  return user === undefined ? { reason: "token_user_unknown" } : { user };
}

/**
 * The reason code for an error thrown by `jose`'s `jwtVerify`, e.g.
 * `token_expired`, `token_issuer_invalid`, `token_algorithm_not_allowed`;
 * `token_invalid` for anything else.
 */
export function reasonForTokenError(error: unknown): string {
  if (error instanceof errors.JWTExpired) return "token_expired";
  if (error instanceof errors.JWTClaimValidationFailed) {
    switch (error.claim) {
      case "iss":
        return "token_issuer_invalid";
      case "aud":
        return "token_audience_invalid";
      case "nbf":
        return "token_not_yet_valid";
      default:
        return "token_claim_invalid";
    }
  }
  if (error instanceof errors.JOSEAlgNotAllowed) {
    return "token_algorithm_not_allowed";
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return "token_signature_invalid";
  }
  if (
    error instanceof errors.JWKSNoMatchingKey ||
    error instanceof errors.JWKSMultipleMatchingKeys
  ) {
    return "token_key_unknown";
  }
  if (
    error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid ||
    error instanceof errors.JOSENotSupported
  ) {
    return "token_malformed";
  }
  return "token_invalid";
}
