/**
 * The network addresses in `butler.yaml`: where Butler listens, the Ollama
 * it forwards to, the OIDC issuer and the browser origins CORS admits. Each
 * parser throws a RangeError naming the value and the rule it broke.
 *
 * @module
 */

/** A listen address split for `Deno.serve`. */
export interface ListenAddress {
  readonly hostname: string;
  readonly port: number;
}

/**
 * Parses `host:port` or `[ipv6]:port`; the brackets are dropped.
 *
 * @example
 * ```ts
 * parseListenAddress("[::1]:8080"); // { hostname: "::1", port: 8080 }
 * ```
 */
export function parseListenAddress(text: string): ListenAddress {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):([0-9]{1,5})$/
    .exec(text);
  const rule = `write host:port, e.g. "127.0.0.1:8080" or "[::1]:8080"`;
  if (match === null) {
    throw new RangeError(
      `${JSON.stringify(text)} is not a listen address; ${rule}`,
    );
  }

  const ipv6 = match[1];
  if (ipv6 !== undefined && !URL.canParse(`http://[${ipv6}]/`)) {
    throw new RangeError(
      `${JSON.stringify(text)} is not a listen address: ` +
        `"${ipv6}" is not an IPv6 address`,
    );
  }

  const port = Number(match[3]);
  if (port > 65535) {
    throw new RangeError(
      `${JSON.stringify(text)} is not a listen address: ` +
        `port ${port} is above 65535`,
    );
  }
  return { hostname: ipv6 ?? match[2], port };
}

/**
 * Parses the Ollama base URL: http or https, a host, and nothing after it
 * but an optional `/` (Butler appends the request's own path).
 */
export function parseUpstreamUrl(text: string): URL {
  const url = parseHttpUrl(text, "upstream URL");
  if (url.pathname !== "/") {
    throw new RangeError(
      `${JSON.stringify(text)} has a path (${url.pathname}); write the ` +
        `server's base URL only, e.g. "http://127.0.0.1:11434"`,
    );
  }
  return url;
}

/**
 * Parses an OIDC issuer URL. It must be https, except plain http to a
 * loopback host (localhost, 127.0.0.0/8, ::1) for local testing.
 */
export function parseIssuerUrl(text: string): URL {
  const url = parseHttpUrl(text, "issuer URL");
  if (url.protocol === "http:" && !isLoopbackHost(url.hostname)) {
    throw new RangeError(
      `${JSON.stringify(text)} is not https; an OIDC issuer must use https ` +
        `(plain http is accepted only for localhost, 127.0.0.0/8 and ::1)`,
    );
  }
  return url;
}

/**
 * Parses a browser origin, `scheme://host[:port]`, into its canonical form
 * (lowercase host, default port dropped). `*` is refused: Butler's clients
 * send credentials, so each allowed origin must be listed.
 */
export function parseCorsOrigin(text: string): string {
  if (text.trim() === "*") {
    throw new RangeError(
      `"*" is not allowed: requests to Butler carry credentials, so list ` +
        `each origin as scheme://host[:port]`,
    );
  }
  const url = parseHttpUrl(text, "origin");
  if (url.pathname !== "/") {
    throw new RangeError(
      `${JSON.stringify(text)} is not an origin: it has a path; ` +
        `write scheme://host[:port]`,
    );
  }
  return url.origin;
}

/** Whether a URL hostname is loopback: `localhost`, 127.0.0.0/8 or ::1. */
export function isLoopbackHost(hostname: string): boolean {
  return hostname === "localhost" || hostname === "[::1]" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

function parseHttpUrl(text: string, what: string): URL {
  const url = URL.canParse(text) ? new URL(text) : undefined;
  if (
    url === undefined ||
    (url.protocol !== "http:" && url.protocol !== "https:") ||
    url.hostname === ""
  ) {
    throw new RangeError(
      `${JSON.stringify(text)} is not an ${what}; write http(s)://host[:port]`,
    );
  }
  if (url.username !== "" || url.password !== "") {
    throw new RangeError(
      `the ${what} must not contain a user name or password`,
    );
  }
  if (url.search !== "" || url.hash !== "" || /[?#]/.test(text)) {
    throw new RangeError(
      `${JSON.stringify(text)} must not have a query or fragment`,
    );
  }
  return url;
}
