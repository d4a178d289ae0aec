/**
 * The answer to a path that is no route: Ollama's own (Go's `net/http`)
 * plain-text 404, so a client sees what Ollama itself would have sent.
 *
 * @module
 */

/** A fresh `404 page not found` response. */
export function notFound(): Response {
  return new Response("404 page not found", {
    status: 404,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}
