/**
 * The reference floor for the benchmark: a Deno proxy with no policy at all,
 * `Deno.serve` in front of `fetch`, passing bodies through untouched. What
 * Butler costs above this is Butler; what this costs above nginx is the
 * platform.
 *
 *   deno run --allow-net=127.0.0.1 bench/lib/bare_proxy.ts <port> <upstream>
 *
 * @module
 */

const HOP_BY_HOP = new Set(["connection", "keep-alive", "transfer-encoding"]);

if (import.meta.main) {
  const [port, upstream] = Deno.args;
  Deno.serve({
    hostname: "127.0.0.1",
    port: Number(port),
    onListen: () => {},
  }, async (request) => {
    const url = new URL(request.url);
    const headers = new Headers();
    for (const [name, value] of request.headers) {
      if (!HOP_BY_HOP.has(name) && name !== "host") headers.set(name, value);
    }
    const response = await fetch(upstream + url.pathname + url.search, {
      method: request.method,
      headers,
      body: request.body,
    });
    return new Response(response.body, {
      status: response.status,
      headers: response.headers,
    });
  });
}
