/**
 * Removes from an OpenAI-style stream the usage Butler asked for on the
 * client's behalf (`usage_request.ts`), so the client receives what Ollama
 * would have sent it without Butler:
 *
 * - the extra chunk with `"choices": []` and `usage`, sent before
 *   `data: [DONE]`, is dropped;
 * - on `/v1/completions` Ollama also puts `"usage"` (zeros) on every chunk
 *   when asked; that member is cut out of the chunk's JSON text, leaving
 *   every other byte as Ollama wrote it.
 *
 * The stream is framed into server-sent events with the token tap's framer.
 * An event that needs no change is forwarded as the very bytes received;
 * only the bytes of an event not yet complete are held back, until its end
 * arrives (Ollama writes each event whole, so in practice nothing waits).
 *
 * The token counter must see the stream before it.
 *
 * @module
 */

import { EventFramer, type StreamEvent } from "./token_tap.ts";
import type { Emit } from "./stream_cap.ts";

const USAGE_KEY = '"usage"';
const LF = 0x0a;
const CR = 0x0d;

/**
 * Removes usage chunks and `usage` members from an OpenAI-style
 * server-sent event stream and passes everything else through.
 *
 * @example
 * ```ts
 * const stripper = new UsageStripper();
 * for (const chunk of chunks) stripper.push(chunk, send);
 * stripper.end(send);
 * ```
 */
export class UsageStripper {
  readonly #framer = new EventFramer("sse");
  /** Copies of the bytes of the event still being received. */
  #held: Uint8Array[] = [];
  /**
   * The last event ended in `\r` at the end of a chunk: a `\n` opening the
   * next chunk completes its line ending and shares its fate.
   */
  #lineFeedOf: "sent" | "dropped" | undefined;

  /** Passes on the events `chunk` completes, rewritten where needed. */
  push(chunk: Uint8Array, emit: Emit): void {
    let start = 0;
    if (
      this.#lineFeedOf !== undefined && this.#held.length === 0 &&
      chunk[0] === LF
    ) {
      if (this.#lineFeedOf === "sent") emit(chunk.subarray(0, 1));
      start = 1;
    }
    this.#lineFeedOf = undefined;
    this.#framer.push(chunk, (event, end) => {
      const raw = [...this.#held, chunk.subarray(start, end)];
      this.#held = [];
      start = end;
      const out = rewriteEvent(event, raw);
      for (const bytes of out) emit(bytes);
      if (end === chunk.length && chunk[end - 1] === CR) {
        this.#lineFeedOf = out.length === 0 ? "dropped" : "sent";
      }
    });
    if (start < chunk.length) this.#held.push(chunk.slice(start));
  }

  /** The stream ended: an unterminated last event is passed on as it came. */
  end(emit: Emit): void {
    for (const bytes of this.#held) emit(bytes);
    this.#held = [];
  }
}

/** The bytes to send for one complete event (its `raw` bytes when unchanged). */
function rewriteEvent(
  event: StreamEvent,
  raw: Uint8Array[],
): Uint8Array[] {
  if (!event.data.includes(USAGE_KEY)) return raw;
  let chunk: unknown;
  try {
    chunk = JSON.parse(event.data);
  } catch {
    return raw;
  }
  if (typeof chunk !== "object" || chunk === null || !("usage" in chunk)) {
    return raw;
  }
  const choices = (chunk as { choices?: unknown }).choices;
  if (Array.isArray(choices) && choices.length === 0) return [];

  const stripped = removeTopLevelMember(event.data, "usage");
  if (stripped === undefined) return raw;
  const text = new TextDecoder().decode(concat(raw));
  const at = text.indexOf(event.data);
  if (at < 0) return raw; // multi-line data: Ollama never sends it
  return [
    new TextEncoder().encode(
      text.slice(0, at) + stripped + text.slice(at + event.data.length),
    ),
  ];
}

/**
 * `json` (one object) without its top-level member `key` and the comma that
 * separated it; undefined when there is no such member or `json` is not an
 * object. Every other character is kept as it was.
 */
export function removeTopLevelMember(
  json: string,
  key: string,
): string | undefined {
  let i = skipSpace(json, 0);
  if (json[i] !== "{") return undefined;
  i++;
  /** End of the previous member's value (where its separating comma starts). */
  let previousEnd = -1;
  while (i < json.length) {
    i = skipSpace(json, i);
    if (json[i] === "}") return undefined;
    const memberStart = i;
    const keyEnd = skipString(json, i);
    if (keyEnd < 0) return undefined;
    const name = JSON.parse(json.slice(i, keyEnd));
    i = skipSpace(json, keyEnd);
    if (json[i] !== ":") return undefined;
    const valueEnd = skipValue(json, skipSpace(json, i + 1));
    if (valueEnd < 0) return undefined;
    const after = skipSpace(json, valueEnd);
    if (name === key) {
      if (previousEnd >= 0) {
        return json.slice(0, previousEnd) + json.slice(valueEnd);
      }
      // The first member: take the comma after it instead.
      const next = json[after] === "," ? skipSpace(json, after + 1) : after;
      return json.slice(0, memberStart) + json.slice(next);
    }
    previousEnd = valueEnd;
    if (json[after] === ",") i = after + 1;
    else if (json[after] === "}") return undefined;
    else return undefined;
  }
  return undefined;
}

function skipSpace(text: string, i: number): number {
  while (i < text.length && " \t\r\n".includes(text[i])) i++;
  return i;
}

/** The index just past the string starting at `i`, or -1. */
function skipString(text: string, i: number): number {
  if (text[i] !== '"') return -1;
  for (i++; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === '"') return i + 1;
  }
  return -1;
}

/** The index just past the JSON value starting at `i`, or -1. */
function skipValue(text: string, i: number): number {
  if (text[i] === '"') return skipString(text, i);
  if (text[i] !== "{" && text[i] !== "[") {
    while (i < text.length && !",}] \t\r\n".includes(text[i])) i++;
    return i;
  }
  let depth = 0;
  for (; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      i = skipString(text, i) - 1;
      if (i < 0) return -1;
    } else if (c === "{" || c === "[") {
      depth++;
    } else if (c === "}" || c === "]") {
      depth--;
      if (depth === 0) return i + 1;
    }
  }
  return -1;
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
