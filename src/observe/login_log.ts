/**
 * One log line per login attempt on `/auth/login`, and a refusal counted for
 * each one that failed.
 *
 * @module
 */

import { decodeJwt } from "jose";
import type { Shared } from "../runtime.ts";

const LOGIN_REFUSAL_REASONS: Readonly<Record<number, string>> = {
  400: "bad_login_body",
  401: "invalid_credentials",
  403: "login_origin_not_allowed",
  404: "unknown_route",
  408: "body_timeout",
  413: "body_too_large",
  415: "login_not_json",
  429: "login_throttled",
};

/**
 * Logs the login answered with `response`. The username is logged only once
 * the password matched: a failed attempt's username may be a password typed
 * in the wrong field.
 */
export async function logLogin(
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
