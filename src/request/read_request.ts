/**
 * The body step: reads the request body the way Ollama will act on it, in
 * full and bounded, for every route that names a model, and gives back the
 * bytes to forward. Routes that do not name a model have their body streamed
 * through, still bounded.
 *
 * @module
 */

import { type Refusal, refuse } from "../errors/refusal.ts";
import type { RouteMatch } from "../routes/table.ts";
import type { ReadRequest } from "../policy/decide.ts";
import { JsonSyntaxError, parseJsonAsGo } from "./go_json.ts";
import { BodyError, readBodyBounded } from "./read_body.ts";
import { multipartFormValues } from "./multipart.ts";

/**
 * Largest body Butler reads to decide on, when no policy sets a smaller
 * `max_request_bytes`. Bodies carry base64 images, so this is generous.
 */
export const DEFAULT_BODY_LIMIT = 64 * 1024 * 1024;

/** A request read for deciding, with what to forward. */
export interface ReadResult extends ReadRequest {
  /** The bytes to forward (as received, or decoded from zstd). */
  readonly forwardBytes: Uint8Array | null;
  /** Body size as received, for the log. */
  readonly bytesIn: number;
}

/** Reads and parses the body of `request` for the matched route. */
export async function readRequest(
  request: Request,
  options: {
    match: RouteMatch;
    limit: number;
    /** Aborting it stops the read with 408 (the body read deadline). */
    signal?: AbortSignal;
  },
): Promise<ReadResult | Refusal> {
  const { match, limit, signal } = options;
  const { route } = match;
  if (!route.readsBody || request.body === null) {
    return { match, forwardBytes: null, bytesIn: 0 };
  }

  try {
    const { raw, decoded } = await readBodyBounded(request, {
      limit,
      acceptsZstd: route.acceptsZstd,
      signal,
    });

    if (route.kind === "transcribe") {
      // Ollama writes `language` and `prompt` into the system prompt.
      const fields = multipartFormValues(decoded, {
        contentType: request.headers.get("content-type") ?? "",
        query: match.query,
        names: ["model", "language", "prompt"],
      });
      const formTexts = [fields.get("language"), fields.get("prompt")]
        .filter((text): text is string => text !== undefined && text !== "");
      return {
        match,
        formModel: fields.get("model"),
        formTexts,
        forwardBytes: decoded,
        bytesIn: raw.length,
      };
    }

    const body = parseJsonAsGo(decoded);
    if (body.kind !== "object") {
      return refuse(400, "bad_json", "request body must be a JSON object");
    }
    return { match, body, forwardBytes: decoded, bytesIn: raw.length };
  } catch (error) {
    if (error instanceof BodyError) {
      return refuse(error.status, error.reason, error.message);
    }
    if (error instanceof JsonSyntaxError) {
      return refuse(400, "bad_json", `invalid JSON body: ${error.message}`);
    }
    throw error;
  }
}
