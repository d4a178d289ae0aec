/**
 * Sends a decided request to Ollama and waits for its response headers. A
 * model can take minutes to load before its first byte, so the wait is
 * bounded by `upstream_timeout`, not by a short default. The body is never
 * awaited here: it streams back as it arrives.
 *
 * @module
 */

import { type Refusal, refuse } from "../errors/refusal.ts";

/** What to send upstream. */
export interface UpstreamRequest {
  readonly method: string;
  /** Path and query exactly as decided (already matched against the table). */
  readonly target: string;
  readonly headers: Headers;
  /** Bytes Butler read, or the client's stream for routes it does not read. */
  readonly body: BodyInit | null;
  /** Aborts when the client goes away (the handler's `request.signal`). */
  readonly clientSignal: AbortSignal;
}

/**
 * Fetches `request` from `upstream`. Resolves to the upstream response once
 * its headers arrive, or to a 502/504 refusal when Ollama cannot be reached,
 * fails before headers, or takes longer than `timeoutMs` to answer.
 */
export async function fetchUpstream(
  request: UpstreamRequest,
  options: { upstream: URL; timeoutMs: number },
): Promise<Response | Refusal> {
  // The upstream URL is an origin with path "/" (the config allows no
  // more), and the target a path from the route table: joining strings
  // gives the URL `new URL(target, upstream)` would, and `fetch` parses it
  // once instead of twice.
  const url = options.upstream.origin + request.target;
  // One controller for the whole exchange. The client's signal stays
  // attached through the body, so a client hanging up mid-stream cancels
  // the generation upstream. (A listener, not `AbortSignal.any`: that cost
  // more than the rest of forwarding a small request, measured in bench/.)
  const exchange = new AbortController();
  const { clientSignal } = request;
  if (clientSignal.aborted) exchange.abort(clientSignal.reason);
  clientSignal.addEventListener(
    "abort",
    () => exchange.abort(clientSignal.reason),
    { once: true },
  );
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    exchange.abort(new DOMException("timeout", "TimeoutError"));
  }, options.timeoutMs);
  const signal = exchange.signal;

  try {
    return await fetch(url, {
      method: request.method,
      headers: request.headers,
      body: request.body,
      signal,
      redirect: "manual",
    });
  } catch (error) {
    if (timedOut) {
      return refuse(
        504,
        "upstream_timeout",
        `upstream did not answer within ${options.timeoutMs} ms`,
      );
    }
    if (request.clientSignal.aborted) {
      return refuse(499, "client_closed", "client closed the request");
    }
    return refuse(502, "upstream_unavailable", "upstream unavailable", {
      detail: { error: connectionProblem(error) },
    });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Why the upstream could not be reached (refused, reset, no route), for the
 * log. URLs are cut out of the platform's message: a transcription's query
 * can carry a prompt, and prompts are never logged unless configured.
 */
function connectionProblem(error: unknown): string {
  const parts: string[] = [];
  // fetch says "fetch failed"; the reason is in the cause chain.
  for (let e = error, depth = 0; e !== undefined && depth < 4; depth++) {
    parts.push(e instanceof Error ? e.message : String(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  const text = parts.join(": ");
  return text.replace(/[a-z][a-z0-9+.-]*:\/\/\S*/gi, "<url>");
}
