/**
 * Which response dialect a generating route streams, for the token tap.
 *
 * @module
 */

import type { TapDialect } from "./token_tap.ts";

const DIALECTS: Record<string, TapDialect> = {
  "/api/generate": "native",
  "/api/chat": "native",
  "/v1/chat/completions": "openai_chat",
  "/v1/completions": "openai_completions",
  "/v1/messages": "anthropic",
  "/v1/responses": "responses",
};

/** The tap dialect of a route pattern, or undefined for non-generating routes. */
export function tapDialectFor(routePattern: string): TapDialect | undefined {
  return DIALECTS[routePattern];
}
