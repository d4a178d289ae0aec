/**
 * The ending Butler writes when the upstream breaks off a streamed answer
 * (Ollama killed, its connection reset): an error in the stream's own
 * dialect, so that clients show a reason instead of a truncated stream.
 *
 * - NDJSON (native routes): a last line `{"error": "…"}`, what Ollama itself
 *   sends when a generation fails mid-stream;
 * - OpenAI server-sent events: `data: {"error": {"message", "type", …}}`;
 * - Anthropic: `event: error` with `{"type": "error", "error": {…}}`;
 * - OpenAI Responses: `event: error` with `{"type": "error", "message", …}`.
 *
 * @module
 */

import type { Dialect } from "../errors/refusal.ts";
import { errorBody } from "../errors/render.ts";

const encoder = new TextEncoder();
const LF = 0x0a;

/** What the ending is written for. */
export interface StreamErrorOptions {
  /** The route's error dialect. */
  readonly dialect: Dialect;
  /** How the stream is framed. */
  readonly format: "ndjson" | "sse";
  /** The route pattern (`/v1/responses` has its own error event). */
  readonly routePattern: string;
  /** The message the client sees. */
  readonly message: string;
}

/**
 * The bytes that end a broken stream. `tail` holds the last bytes already
 * sent (up to two): when they do not end a line (NDJSON) or an event (SSE),
 * the ending starts by closing it, so the error is a frame of its own.
 */
export function streamErrorEnding(
  tail: Uint8Array,
  options: StreamErrorOptions,
): Uint8Array {
  const { dialect, format, message } = options;
  const last = tail.at(-1);
  if (format === "ndjson") {
    const open = last !== undefined && last !== LF ? "\n" : "";
    return encoder.encode(
      `${open}${JSON.stringify(errorBody("native", 502, message))}\n`,
    );
  }

  const open = last === undefined || (last === LF && tail.at(-2) === LF)
    ? ""
    : last === LF
    ? "\n"
    : "\n\n";
  let event: string;
  if (options.routePattern === "/v1/responses") {
    event = `event: error\ndata: ${
      JSON.stringify({ type: "error", code: null, message, param: null })
    }\n\n`;
  } else if (dialect === "anthropic") {
    event = `event: error\ndata: ${
      JSON.stringify(errorBody("anthropic", 502, message))
    }\n\n`;
  } else {
    event = `data: ${JSON.stringify(errorBody(dialect, 502, message))}\n\n`;
  }
  return encoder.encode(open + event);
}
