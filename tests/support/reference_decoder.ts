/**
 * What Ollama acts on for a request body, by Ollama's rules (shared
 * `ollama-api.md` §1–2), for the fuzz tests to compare Butler against. Built
 * on the simulator's independent Go decoder (`tests/sim/go_decode.ts`) and
 * model-name resolver (`tests/sim/model_ref.ts`); shares no code with
 * Butler's `src/`.
 *
 * @module
 */

import {
  bindJson,
  CHAT_REQUEST,
  checkOptions,
  GENERATE_REQUEST,
  type GoValue,
} from "../sim/go_decode.ts";

/** The fields of a chat or generate body that decide what Ollama does. */
export interface OllamaReading {
  /** `model` ("" when absent or null). */
  readonly model: string;
  /** `stream`: null when absent (Ollama then streams). */
  readonly stream: boolean | null;
  /** `/api/chat`: each message's `content`; `/api/generate`: `[prompt]`. */
  readonly texts: readonly string[];
  /** `/api/generate` `system` ("" when absent). */
  readonly system: string;
  /** `options.num_predict` as decoded (a JSON number), or undefined. */
  readonly numPredict: GoValue | undefined;
}

/**
 * Reads `body` as Ollama's `/api/chat` or `/api/generate` handler binds it.
 * Returns `{ refused }` with Go's error when Ollama answers 400 instead.
 */
export function ollamaReads(
  route: "/api/chat" | "/api/generate",
  body: Uint8Array,
): OllamaReading | { refused: string } {
  const bound = bindJson(
    body,
    route === "/api/chat" ? CHAT_REQUEST : GENERATE_REQUEST,
  );
  if (bound.error !== undefined || bound.value === undefined) {
    return { refused: bound.error ?? "no value" };
  }
  const value = bound.value;
  const options = value.options;
  const optionError = checkOptions(options);
  if (optionError !== undefined) return { refused: optionError };
  const numPredict = options instanceof Map
    ? options.get("num_predict") ?? undefined
    : undefined;
  const texts = route === "/api/chat"
    ? ((value.messages as Record<string, GoValue>[] | null) ?? []).map((m) =>
      String(m.content ?? "")
    )
    : [String(value.prompt ?? "")];
  return {
    model: String(value.model ?? ""),
    stream: (value.stream as boolean | null) ?? null,
    texts,
    system: String(value.system ?? ""),
    numPredict,
  };
}
