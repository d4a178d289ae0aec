/**
 * Asks Ollama for token usage on OpenAI-style streams whose client did not.
 *
 * `/v1/chat/completions` and `/v1/completions` streams carry counts only
 * when the request sets `stream_options.include_usage` (see
 * `shared/ollama-api.md` §6). Without counts Butler could charge a budget
 * only by counting chunks, so it sets the option itself and removes what
 * it added from the stream (`usage_strip.ts`): the client receives what it
 * would have received from Ollama directly.
 *
 * `stream_options` and `include_usage` are Go struct fields: any key that
 * folds to the name is read, so the rewrite removes every such key and
 * writes one canonical key (as the caps do).
 *
 * @module
 */

import type { JsonNode } from "../request/go_json.ts";
import {
  FieldTypeError,
  getBool,
  getField,
  setField,
} from "../request/go_fields.ts";

/** Route patterns whose streams report usage only when asked. */
const ASKS_FOR_USAGE = new Set(["/v1/chat/completions", "/v1/completions"]);

/** The body to forward and whether Butler added the usage request. */
export type UsageRequest =
  | { readonly kind: "unchanged" }
  | { readonly kind: "rewritten"; readonly body: JsonNode };

const TRUE: JsonNode = { kind: "bool", value: true };

/**
 * For a streamed request on `route` that did not ask for usage, the body
 * with `stream_options.include_usage` set to true; otherwise `unchanged`
 * (not streamed, another route, or the client asked itself).
 *
 * @throws {FieldTypeError} when `stream_options` is not an object or
 * `include_usage` not a boolean (Ollama answers 400 to both).
 *
 * @example
 * ```ts
 * const usage = requestStreamUsage(body, { route: "/v1/chat/completions", stream: true });
 * if (usage.kind === "rewritten") forward(serializeJson(usage.body));
 * ```
 */
export function requestStreamUsage(
  body: JsonNode,
  options: { route: string; stream: boolean },
): UsageRequest {
  if (!options.stream || !ASKS_FOR_USAGE.has(options.route)) {
    return { kind: "unchanged" };
  }

  const found = getField(body, "stream_options");
  if (found === undefined || found.kind === "null") {
    const streamOptions: JsonNode = {
      kind: "object",
      entries: [["include_usage", TRUE]],
    };
    return {
      kind: "rewritten",
      body: setField(body, "stream_options", streamOptions),
    };
  }
  if (found.kind !== "object") {
    throw new FieldTypeError("stream_options", "object", found);
  }
  if (getBool(found, "include_usage", "stream_options") === true) {
    return { kind: "unchanged" };
  }
  return {
    kind: "rewritten",
    body: setField(
      body,
      "stream_options",
      setField(found, "include_usage", TRUE),
    ),
  };
}
