/**
 * The `healthcheck` command's probe: one `GET /healthz` to this Butler's own
 * listen address, over TLS when the config serves TLS. Containers run it as
 * their `HEALTHCHECK`, where there is no shell or curl.
 *
 * It speaks HTTP/1.1 on a socket of its own rather than through `fetch`:
 * the certificate names the host clients use, not the listen address, and
 * `fetch` cannot check a chain without also checking the name. The probe
 * checks the chain against the configured certificate (and the system's
 * roots), so the server must hold the configured key, and skips the name.
 *
 * @module
 */

import type { Policy } from "../config/policy.ts";

/** How the probe went: the HTTP status, or why there was none. */
export type ProbeResult =
  | { readonly status: number }
  | { readonly error: string };

const DEFAULT_TIMEOUT_MS = 5000;

/**
 * Sends `GET /healthz` to the Butler that `policy` describes and reads the
 * status line of the answer.
 *
 * @example
 * ```ts
 * const result = await probeHealth(await loadPolicy("butler.yaml"));
 * Deno.exit("status" in result && result.status === 200 ? 0 : 1);
 * ```
 */
export async function probeHealth(
  policy: Policy,
  options: { timeoutMs?: number } = {},
): Promise<ProbeResult> {
  // The listen address itself, even a wildcard (0.0.0.0, ::): on Linux a
  // connection to a wildcard reaches this host, and it is the only address
  // the flags from `permissions` let this process reach.
  const target = { hostname: policy.listen.hostname, port: policy.listen.port };
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let conn: Deno.Conn | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<ProbeResult>((resolve) => {
    timer = setTimeout(() => {
      conn?.close();
      resolve({ error: `no answer within ${timeoutMs} ms` });
    }, timeoutMs);
  });

  const exchange = async (): Promise<ProbeResult> => {
    conn = policy.tls === undefined
      ? await Deno.connect(target)
      : await Deno.connectTls({
        ...target,
        caCerts: [await Deno.readTextFile(policy.tls.certPath)],
        unsafelyDisableHostnameVerification: true,
      });
    const host = target.hostname.includes(":")
      ? `[${target.hostname}]`
      : target.hostname;
    await writeAll(
      conn,
      `GET /healthz HTTP/1.1\r\nHost: ${host}:${target.port}\r\n` +
        "Connection: close\r\n\r\n",
    );
    return { status: await readStatusCode(conn) };
  };

  try {
    return await Promise.race([
      exchange().catch((error) => ({
        error: error instanceof Error ? error.message : String(error),
      })),
      timedOut,
    ]);
  } finally {
    clearTimeout(timer);
    try {
      conn?.close();
    } catch {
      // Already closed by the timeout.
    }
  }
}

async function writeAll(conn: Deno.Conn, text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  let written = 0;
  while (written < bytes.length) {
    written += await conn.write(bytes.subarray(written));
  }
}

/** Reads up to the end of the status line, `HTTP/1.1 200 OK\r\n`. */
async function readStatusCode(conn: Deno.Conn): Promise<number> {
  const decoder = new TextDecoder();
  const buffer = new Uint8Array(256);
  let head = "";
  while (!head.includes("\r\n") && head.length < 1024) {
    const read = await conn.read(buffer);
    if (read === null) break;
    head += decoder.decode(buffer.subarray(0, read), { stream: true });
  }
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(head);
  if (match === null) {
    throw new Error(
      `the answer is not HTTP/1.1: ${JSON.stringify(head.slice(0, 40))}`,
    );
  }
  return Number(match[1]);
}
