/**
 * Butler's own routes, answered before the Ollama route table: `/healthz`
 * (no authentication), `/metrics` (optionally behind a bearer token) and
 * `/auth/login`.
 *
 * @module
 */

import { handleLogin } from "../auth/login.ts";
import type { PasswordCompare } from "../auth/password.ts";
import { createPasswordCompare } from "../auth/password_worker.ts";
import { coalescedProbe, healthResponse } from "../observe/health.ts";
import { logLogin } from "../observe/login_log.ts";
import { metricsAuthorized } from "../observe/metrics_auth.ts";
import type { Context } from "../runtime.ts";
import type { Policy } from "../config/policy.ts";
import { notFound } from "./not_found.ts";

/** Upstream probes for `/healthz`; callers at the same moment share one. */
const probeUpstream = coalescedProbe();

/** bcrypt compares for logins, on worker threads (one per process). */
let passwordCompare: PasswordCompare | undefined;

/**
 * The answer when `request` is for one of Butler's own routes, or undefined
 * when it is not (the request goes on to the Ollama route table). A URL with
 * a query string is not one of them.
 */
export async function ownRoute(
  request: Request,
  options: { info: Deno.ServeHandlerInfo; context: Context },
): Promise<Response | undefined> {
  const { runtime, shared } = options.context;
  const url = request.url;
  // Most requests are for Ollama routes: parse the URL only when its end
  // names one of Butler's own.
  const path = url.endsWith("/healthz") || url.endsWith("/metrics") ||
      url.endsWith("/auth/login")
    ? new URL(url).pathname
    : undefined;
  if (path === undefined) return undefined;
  if (url.endsWith("/healthz") && path === "/healthz") {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return notFound();
    }
    const up = await probeUpstream(runtime.policy.upstream);
    shared.metrics.upstreamUp.set({}, up ? 1 : 0);
    return healthResponse(up, { oidc: runtime.oidc?.state });
  }
  if (url.endsWith("/metrics") && path === "/metrics") {
    if (request.method !== "GET") return notFound();
    const bearer = runtime.policy.metricsBearer;
    if (
      bearer !== undefined &&
      !metricsAuthorized(request.headers.get("authorization"), bearer)
    ) {
      return new Response("unauthorized\n", { status: 401 });
    }
    return new Response(shared.renderMetrics(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  }
  if (url.endsWith("/auth/login") && path === "/auth/login") {
    if (request.method !== "POST") return notFound();
    const remote = options.info.remoteAddr;
    const address = remote.transport === "tcp" ? remote.hostname : "local";
    const crossSite = refuseCrossSiteLogin(request, runtime.policy);
    if (crossSite !== undefined) {
      await logLogin(crossSite, { shared, address });
      return crossSite;
    }
    passwordCompare ??= createPasswordCompare({
      onFallback: (reason) =>
        shared.log.warn(
          "password checks run on the main thread and hold up requests",
          { reason },
        ),
    });
    const response = await handleLogin(request, {
      policy: runtime.policy,
      throttle: shared.throttle,
      clientAddress: address,
      compare: passwordCompare,
    });
    await logLogin(response, { shared, address });
    return response;
  }
  return undefined;
}

/**
 * A browser sends a form-like POST to any origin without asking first, so a
 * web page could try passwords (and lock people out) from a visitor's
 * browser. Logins must be JSON, which makes a browser ask first, and a
 * browser origin must be listed in `cors.allow_origins`.
 */
function refuseCrossSiteLogin(
  request: Request,
  policy: Policy,
): Response | undefined {
  const origin = request.headers.get("origin");
  if (origin !== null && !policy.corsAllowOrigins.includes(origin)) {
    return Response.json({ error: "login from this origin is not allowed" }, {
      status: 403,
    });
  }
  const type = request.headers.get("content-type") ?? "";
  if (type.split(";")[0].trim().toLowerCase() !== "application/json") {
    return Response.json(
      { error: "login needs Content-Type: application/json" },
      { status: 415 },
    );
  }
  return undefined;
}
