/**
 * Turns a refusal into a response in the dialect of the route, so that
 * Ollama, OpenAI and Anthropic clients show the reason to their users.
 *
 * @module
 */

import type { Dialect, Refusal } from "./refusal.ts";

const OPENAI_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  408: "timeout_error",
  413: "invalid_request_error",
  415: "invalid_request_error",
  429: "rate_limit_error",
};

const ANTHROPIC_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  408: "timeout_error",
  413: "request_too_large",
  415: "invalid_request_error",
  429: "rate_limit_error",
};

/** The JSON body of an error in `dialect`. */
export function errorBody(dialect: Dialect, status: number, message: string) {
  switch (dialect) {
    case "native":
      return { error: message };
    case "openai":
      return {
        error: {
          message,
          type: OPENAI_TYPES[status] ??
            (status >= 500 ? "api_error" : "invalid_request_error"),
          param: null,
          code: null,
        },
      };
    case "anthropic":
      return {
        type: "error",
        error: {
          type: ANTHROPIC_TYPES[status] ??
            (status >= 500 ? "api_error" : "invalid_request_error"),
          message,
        },
      };
  }
}

/** The response for `refusal` on a route of `dialect`. */
export function renderRefusal(refusal: Refusal, dialect: Dialect): Response {
  const headers = new Headers(refusal.headers);
  headers.set("content-type", "application/json; charset=utf-8");
  return new Response(
    JSON.stringify(errorBody(dialect, refusal.status, refusal.message)),
    { status: refusal.status, headers },
  );
}
