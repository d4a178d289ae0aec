/**
 * `/healthz`: 200 when the upstream answers `GET /api/version`, 503
 * otherwise. It says nothing about clients, keys or policy.
 *
 * @module
 */

const PROBE_TIMEOUT_MS = 2000;

/** Probes the upstream; true when it answered `/api/version` with 2xx. */
export async function upstreamReachable(upstream: URL): Promise<boolean> {
  try {
    const response = await fetch(new URL("/api/version", upstream), {
      signal: AbortSignal.timeout(PROBE_TIMEOUT_MS),
      headers: { "accept-encoding": "identity" },
    });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

/**
 * `upstreamReachable`, with probes in progress shared: `/healthz` needs no
 * credentials, so however many callers ask at once, Ollama sees one probe
 * at a time. An answer is never reused after its probe ends.
 */
export function coalescedProbe(
  probe: (upstream: URL) => Promise<boolean> = upstreamReachable,
): (upstream: URL) => Promise<boolean> {
  const inFlight = new Map<string, Promise<boolean>>();
  return (upstream) => {
    const origin = upstream.origin;
    let answer = inFlight.get(origin);
    if (answer === undefined) {
      answer = probe(upstream).finally(() => inFlight.delete(origin));
      inFlight.set(origin, answer);
    }
    return answer;
  };
}

/** The `/healthz` response. `oidc` is the identity provider's state, if any. */
export function healthResponse(
  upstreamUp: boolean,
  options: { oidc?: string } = {},
): Response {
  const body = {
    status: upstreamUp ? "ok" : "upstream_unavailable",
    upstream: upstreamUp ? "up" : "down",
    ...(options.oidc === undefined ? {} : { oidc: options.oidc }),
  };
  return Response.json(body, {
    status: upstreamUp ? 200 : 503,
    headers: { "cache-control": "no-store" },
  });
}
