/**
 * `POST /auth/login`: a user listed in the config trades a username and
 * password for a token (`jwt_standalone`, or `either` with a `jwt_secret`).
 *
 * @module
 */

import type { Policy } from "../config/policy.ts";
import { issueUserToken } from "./jwt_local.ts";
import type { LoginThrottle } from "./login_throttle.ts";
import {
  bcryptCost,
  DEFAULT_BCRYPT_COST,
  type PasswordCompare,
  verifyPassword,
} from "./password.ts";

/** Largest login body read, in bytes. */
export const MAX_LOGIN_BODY_BYTES = 8 * 1024;

/** Options of {@link handleLogin}. */
export interface LoginOptions {
  policy: Policy;
  throttle: LoginThrottle;
  /** The address failures are counted against. */
  clientAddress: string;
  /** Replaces bcryptjs's compare (tests count the compares). */
  compare?: PasswordCompare;
  /** Replaces the current time in milliseconds (tests of expiry). */
  now?: number;
  /** How long the body may take (default `LOGIN_BODY_TIMEOUT_MS`, 10 s). */
  bodyTimeoutMs?: number;
}

class BodyTooLarge extends Error {}
class BodyTimedOut extends Error {}

/** How long the login body may take to arrive, in milliseconds. */
export const LOGIN_BODY_TIMEOUT_MS = 10_000;

/**
 * Handles the login request: body bounded (8 KiB; 413 over), JSON
 * `{"username","password"}` both strings (400 otherwise), throttling (429 +
 * `Retry-After`, also when all bcrypt slots are busy), the same 401 body for
 * a wrong password and an unknown user (`{"error":"invalid credentials"}`),
 * success 200 `{"token","expires_at"}`. In modes without local users
 * (`api_key`, `oidc`, or no `jwt_secret`) responds 404 `{"error":"not found"}`.
 *
 * @example
 * ```ts
 * const throttle = new LoginThrottle();
 * const response = await handleLogin(request, {
 *   policy,
 *   throttle,
 *   clientAddress: info.remoteAddr.hostname,
 * });
 * ```
 */
export async function handleLogin(
  request: Request,
  options: LoginOptions,
): Promise<Response> {
  const { policy, throttle, clientAddress } = options;
  const secret = policy.auth.jwtSecret;
  const localUsersOn = policy.auth.mode === "jwt_standalone" ||
    policy.auth.mode === "either";
  if (!localUsersOn || secret === undefined) {
    return jsonResponse(404, { error: "not found" });
  }
  if (request.method !== "POST") {
    return jsonResponse(405, { error: "method not allowed; use POST" }, {
      allow: "POST",
    });
  }

  // 1. Read the body, bounded.
  let text: string;
  try {
    text = await readBoundedText(
      request,
      MAX_LOGIN_BODY_BYTES,
      options.bodyTimeoutMs ?? LOGIN_BODY_TIMEOUT_MS,
    );
  } catch (error) {
    if (error instanceof BodyTimedOut) {
      return jsonResponse(408, {
        error: "login body took too long to arrive",
      });
    }
    if (error instanceof BodyTooLarge) {
      return jsonResponse(413, {
        error: `login body is larger than ${MAX_LOGIN_BODY_BYTES} bytes`,
      });
    }
    return jsonResponse(400, { error: "login body could not be read" });
  }

  // 2. Parse the credentials.
  const credentials = parseCredentials(text);
  if ("error" in credentials) {
    return jsonResponse(400, { error: credentials.error });
  }
  const { username, password } = credentials;

  // 3. Throttle before any bcrypt work. The attempt counts as a failure
  // from here on, in the same step as the check, so attempts that run at
  // the same time see each other; a success takes it back.
  const decision = throttle.check(username, clientAddress);
  if (!decision.allowed) {
    return tooManyAttempts(decision.retryAfterSeconds);
  }
  if (!throttle.tryAcquireVerification()) return tooManyAttempts(1);
  throttle.recordFailure(username, clientAddress);

  // 4. Verify: an unknown user costs one bcrypt compare too.
  const user = policy.users.find((candidate) => candidate.name === username);
  let valid: boolean;
  try {
    valid = await verifyPassword(password, user?.passwordHash, {
      compare: options.compare,
      dummyCost: typicalCost(policy),
    });
  } finally {
    throttle.releaseVerification();
  }
  if (!valid || user === undefined) {
    return jsonResponse(401, { error: "invalid credentials" });
  }

  // 5. Issue the token.
  throttle.recordSuccess(username, clientAddress);
  throttle.forgiveAttempt(clientAddress);
  const { token, expiresAt } = await issueUserToken(user.name, {
    secret,
    expiryMs: policy.auth.tokenExpiryMs,
    now: options.now,
  });
  return jsonResponse(200, { token, expires_at: expiresAt }, {
    "cache-control": "no-store",
  });
}

/**
 * The cost the dummy compare for unknown users uses: the highest cost among
 * the configured users' hashes, so an unknown name is never faster than a
 * known one.
 */
function typicalCost(policy: Policy): number {
  const costs = policy.users
    .map((user) => bcryptCost(user.passwordHash))
    .filter((cost) => cost !== undefined);
  return costs.length === 0 ? DEFAULT_BCRYPT_COST : Math.max(...costs);
}

function parseCredentials(
  text: string,
): { username: string; password: string } | { error: string } {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return { error: 'login body is not JSON; send {"username","password"}' };
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    return {
      error: 'login body is not a JSON object; send {"username","password"}',
    };
  }

  const { username, password } = body as Record<string, unknown>;
  const problem = fieldProblem("username", username) ??
    fieldProblem("password", password);
  if (problem !== undefined) return { error: problem };
  return { username: username as string, password: password as string };
}

/** What is wrong with a login field, or undefined when it is a string. */
function fieldProblem(name: string, value: unknown): string | undefined {
  if (typeof value === "string") return undefined;
  if (value === undefined) {
    return `${name}: required field is missing (the name is lower case)`;
  }
  return `${name}: must be a string, got ${
    value === null ? "null" : Array.isArray(value) ? "an array" : typeof value
  }`;
}

async function readBoundedText(
  request: Request,
  maxBytes: number,
  deadlineMs: number,
): Promise<string> {
  const declared = Number(request.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await request.body?.cancel();
    throw new BodyTooLarge();
  }
  if (request.body === null) return "";

  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = request.body.getReader();
  // A body trickled in slower than the deadline allows is given up on: an
  // 8 KiB login has no reason to take long.
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    reader.cancel().catch(() => {});
  }, deadlineMs);
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (timedOut) throw new BodyTimedOut();
      if (done) break;
      total += value.byteLength;
      if (total > maxBytes) {
        await reader.cancel();
        throw new BodyTooLarge();
      }
      chunks.push(value);
    }
  } catch (error) {
    if (timedOut) throw new BodyTimedOut();
    throw error;
  } finally {
    clearTimeout(timer);
  }

  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
}

function tooManyAttempts(retryAfterSeconds: number): Response {
  return jsonResponse(
    429,
    { error: "too many login attempts; try again later" },
    { "retry-after": String(retryAfterSeconds) },
  );
}

function jsonResponse(
  status: number,
  body: Record<string, unknown>,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}
