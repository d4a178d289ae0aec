/**
 * Ends a streamed answer that runs past its generation cap, the way the
 * route's dialect ends a length-limited answer. Some Ollama versions ignore
 * `max_tokens` on `/v1/chat/completions`; this is the backstop.
 *
 * Until `cap` content chunks have passed, every chunk is forwarded whole and
 * unchanged (the same `Uint8Array`). From then on, only complete events are
 * forwarded: events that carry no content (a finish chunk, usage, `[DONE]`,
 * `message_stop`) pass, so a stream that honours the cap ends normally; the
 * first further content event is dropped instead, and the dialect's ending
 * is written in its place.
 *
 * Content chunks are counted by `isContentEvent` from `token_tap.ts`, so the
 * cap and the token count agree on what a chunk is.
 *
 * @module
 */

import {
  EventFramer,
  eventType,
  isContentEvent,
  type StreamEvent,
  type TapDialect,
} from "./token_tap.ts";

/** Options for {@linkcode StreamCapper}. */
export interface StreamCapOptions {
  /** The route's dialect; `native` streams NDJSON, the others SSE. */
  dialect: TapDialect;
  /** `ndjson` for `native`, `sse` for every other dialect. */
  format: "ndjson" | "sse";
  /** Content chunks allowed through (an integer >= 0). */
  cap: number;
  /**
   * Called once when the stream is cut, after the ending is written (the
   * caller stops reading the upstream and logs). Exceptions are swallowed.
   */
  onCut: () => void;
  /**
   * Bytes of a non-content event held back after the cap before it is
   * treated as a runaway and the stream is cut. Default 1 MiB.
   */
  maxHeldBytes?: number;
}

/** Receives the bytes to send on, in order. */
export type Emit = (bytes: Uint8Array) => void;

const DEFAULT_MAX_HELD_BYTES = 1024 * 1024;
const LF = 0x0a;
const CR = 0x0d;

/**
 * Passes a streamed answer through unchanged until `cap` content chunks
 * have passed, then ends it like a length-limited answer of its dialect:
 *
 * - `native`: a `{"model", "created_at", "response"|"message", "done": true,
 *   "done_reason": "length"}` line;
 * - `openai_chat`, `openai_completions`: a chunk with
 *   `finish_reason: "length"` (id, object, created, model copied from the
 *   stream), then `data: [DONE]`;
 * - `anthropic`: `content_block_stop` for an open block, `message_delta` with
 *   `stop_reason: "max_tokens"` and `usage.output_tokens` set to the number
 *   of content chunks sent, `message_stop`;
 * - `responses`: `.done` events for open output items, then
 *   `response.incomplete` with `status: "incomplete"` and
 *   `incomplete_details.reason: "max_output_tokens"` (what OpenAI sends when
 *   `max_output_tokens` stops a response; Ollama never does).
 *
 * The endings carry no usage Butler does not know (native and OpenAI endings
 * have no counts; Responses' `usage` is null).
 *
 * @example
 * ```ts
 * const capper = new StreamCapper({
 *   dialect: "openai_chat",
 *   format: "sse",
 *   cap: 256,
 *   onCut: () => log.info("stream cut at cap"),
 * });
 * for (const chunk of chunks) {
 *   if (capper.push(chunk, send)) break; // cut: the ending was sent
 * }
 * capper.end(send);
 * ```
 */
export class StreamCapper {
  readonly #options: StreamCapOptions;
  readonly #maxHeldBytes: number;
  readonly #framer: EventFramer;
  readonly #ending: EndingWriter;
  #sent = 0;
  #holding: boolean;
  #cut = false;
  /** Copies of bytes after the cap that belong to an unfinished event. */
  #held: Uint8Array[] = [];
  #heldBytes = 0;
  /**
   * The bytes forwarded last ended in `\r` at the end of a chunk: a `\n`
   * opening the next chunk completes that line ending and is forwarded too.
   */
  #lineFeedOwed = false;

  constructor(options: StreamCapOptions) {
    validateOptions(options);
    this.#options = options;
    this.#maxHeldBytes = options.maxHeldBytes ?? DEFAULT_MAX_HELD_BYTES;
    this.#framer = new EventFramer(options.format);
    this.#ending = newEndingWriter(options.dialect);
    this.#holding = options.cap === 0;
  }

  /**
   * Passes on what `chunk` lets through. Returns true once the stream is cut
   * (its ending sent): nothing more is read or sent.
   */
  push(chunk: Uint8Array, emit: Emit): boolean {
    if (this.#cut) return true;
    const { dialect, cap } = this.#options;
    let passWhole = !this.#holding;
    let start = 0;
    if (this.#lineFeedOwed && this.#held.length === 0 && chunk[0] === LF) {
      emit(chunk.subarray(0, 1));
      start = 1;
    }
    this.#lineFeedOwed = false;

    this.#framer.push(chunk, (event, end) => {
      const content = isContentEvent(dialect, event);
      if (!this.#holding) {
        this.#ending.observe(event, content);
        if (content && ++this.#sent >= cap) {
          // The cap'th chunk just completed: send up to it, hold the rest.
          emit(end === chunk.length ? chunk : chunk.subarray(0, end));
          passWhole = false;
          this.#holding = true;
          start = end;
          this.#lineFeedOwed = endsLine(chunk, end);
        }
        return true;
      }

      if (content) {
        this.#cutHere(emit, event);
        return false;
      }
      this.#ending.observe(event, false);
      this.#forwardHeld(emit);
      if (end > start) emit(chunk.subarray(start, end));
      start = end;
      this.#lineFeedOwed = endsLine(chunk, end);
      return true;
    });

    if (this.#cut) return true;
    if (passWhole) {
      emit(chunk);
      return false;
    }
    if (start < chunk.length) {
      this.#held.push(chunk.slice(start));
      this.#heldBytes += chunk.length - start;
      if (this.#heldBytes > this.#maxHeldBytes) {
        this.#cutHere(emit, undefined);
        return true;
      }
    }
    return false;
  }

  /** The upstream ended the stream: sends what was held, or the ending. */
  end(emit: Emit): void {
    if (this.#cut) return;
    let lastIsContent = false;
    let lastEvent: StreamEvent | undefined;
    this.#framer.end((event) => {
      lastEvent = event;
      lastIsContent = isContentEvent(this.#options.dialect, event);
    });
    if (this.#holding && lastIsContent) {
      this.#cutHere(emit, lastEvent);
      return;
    }
    this.#forwardHeld(emit);
  }

  #cutHere(emit: Emit, template: StreamEvent | undefined): void {
    this.#cut = true;
    this.#held = [];
    emit(this.#ending.end(template, this.#sent));
    try {
      this.#options.onCut();
    } catch {
      // The client still gets a well-formed ending.
    }
  }

  #forwardHeld(emit: Emit): void {
    for (const bytes of this.#held) emit(bytes);
    this.#held = [];
    this.#heldBytes = 0;
  }
}

function endsLine(chunk: Uint8Array, end: number): boolean {
  return end === chunk.length && chunk[end - 1] === CR;
}

function validateOptions(options: StreamCapOptions): void {
  if (!Number.isInteger(options.cap) || options.cap < 0) {
    throw new RangeError(
      `StreamCapper cap: ${options.cap} is not allowed; use an integer >= 0`,
    );
  }
  const expected = options.dialect === "native" ? "ndjson" : "sse";
  if (options.format !== expected) {
    throw new RangeError(
      `StreamCapper format: "${options.format}" does not match dialect ` +
        `"${options.dialect}"; it streams ${expected}`,
    );
  }
}

// --- Endings -------------------------------------------------------------

/** Watches the stream for what its ending must repeat, then writes it. */
interface EndingWriter {
  /** Sees every complete event that is forwarded (or counted). */
  observe(event: StreamEvent, content: boolean): void;
  /**
   * The bytes that end the stream. `template` is the event being dropped
   * (its id and model are the stream's); `sent` is content chunks sent.
   */
  end(template: StreamEvent | undefined, sent: number): Uint8Array;
}

const encoder = new TextEncoder();

function newEndingWriter(dialect: TapDialect): EndingWriter {
  switch (dialect) {
    case "native":
      return new NativeEnding();
    case "openai_chat":
    case "openai_completions":
      return new OpenAIEnding(dialect);
    case "anthropic":
      return new AnthropicEnding();
    case "responses":
      return new ResponsesEnding();
  }
}

function sseEvent(name: string, data: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}

function parseObject(text: string | undefined): Record<string, unknown> {
  if (text === undefined) return {};
  try {
    const value = JSON.parse(text);
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? value
      : {};
  } catch {
    return {};
  }
}

/** `{"model", "created_at", …, "done": true, "done_reason": "length"}` */
class NativeEnding implements EndingWriter {
  #last: string | undefined;

  observe(event: StreamEvent, content: boolean): void {
    if (content) this.#last = event.data;
  }

  end(template: StreamEvent | undefined): Uint8Array {
    const source = parseObject(template?.data ?? this.#last);
    const line: Record<string, unknown> = {
      model: source.model ?? "",
      created_at: source.created_at ?? new Date().toISOString(),
    };
    if ("message" in source) {
      line.message = { role: "assistant", content: "" };
    } else {
      line.response = "";
    }
    line.done = true;
    line.done_reason = "length";
    return encoder.encode(JSON.stringify(line) + "\n");
  }
}

/** A `finish_reason: "length"` chunk, then `data: [DONE]`. */
class OpenAIEnding implements EndingWriter {
  readonly #dialect: "openai_chat" | "openai_completions";
  #last: string | undefined;

  constructor(dialect: "openai_chat" | "openai_completions") {
    this.#dialect = dialect;
  }

  observe(event: StreamEvent, content: boolean): void {
    if (content) this.#last = event.data;
  }

  end(template: StreamEvent | undefined): Uint8Array {
    const source = parseObject(template?.data ?? this.#last);
    const chat = this.#dialect === "openai_chat";
    const chunk = {
      id: source.id ?? "",
      object: source.object ??
        (chat ? "chat.completion.chunk" : "text_completion"),
      created: source.created ?? Math.floor(Date.now() / 1000),
      model: source.model ?? "",
      system_fingerprint: source.system_fingerprint ?? "fp_ollama",
      choices: [
        chat
          ? { index: 0, delta: {}, finish_reason: "length" }
          : { text: "", index: 0, finish_reason: "length" },
      ],
    };
    return encoder.encode(
      `data: ${JSON.stringify(chunk)}\n\ndata: [DONE]\n\n`,
    );
  }
}

/** `content_block_stop` (if open), `message_delta`, `message_stop`. */
class AnthropicEnding implements EndingWriter {
  #openBlock: number | undefined;
  #inputTokens: number | undefined;

  observe(event: StreamEvent, content: boolean): void {
    if (content) return;
    const type = eventType(event);
    if (type === "content_block_start") {
      const index = parseObject(event.data).index;
      if (typeof index === "number") this.#openBlock = index;
    } else if (type === "content_block_stop") {
      this.#openBlock = undefined;
    } else if (type === "message_start") {
      const message = parseObject(event.data).message as
        | { usage?: { input_tokens?: unknown } }
        | undefined;
      const input = message?.usage?.input_tokens;
      if (typeof input === "number") this.#inputTokens = input;
    }
  }

  end(_template: StreamEvent | undefined, sent: number): Uint8Array {
    let text = "";
    if (this.#openBlock !== undefined) {
      text += sseEvent("content_block_stop", {
        type: "content_block_stop",
        index: this.#openBlock,
      });
    }
    const usage: Record<string, number> = { output_tokens: sent };
    if (this.#inputTokens !== undefined) usage.input_tokens = this.#inputTokens;
    text += sseEvent("message_delta", {
      type: "message_delta",
      delta: { stop_reason: "max_tokens", stop_sequence: null },
      usage,
    });
    text += sseEvent("message_stop", { type: "message_stop" });
    return encoder.encode(text);
  }
}

interface OpenItem {
  item: Record<string, unknown>;
  outputIndex: number;
  /** Text of `output_text` deltas, for a message item. */
  text: string;
  /** An `output_text` part was added and not yet closed. */
  partIndex: number | undefined;
}

/**
 * `.done` events for items still open, then `response.incomplete`, the way
 * OpenAI ends a response stopped by `max_output_tokens`.
 */
class ResponsesEnding implements EndingWriter {
  #response: Record<string, unknown> | undefined;
  #sequence = -1;
  #open = new Map<string, OpenItem>();
  #lastOpened: OpenItem | undefined;
  #done: unknown[] = [];

  observe(event: StreamEvent, content: boolean): void {
    const type = eventType(event);
    const data = parseObject(event.data);
    if (typeof data.sequence_number === "number") {
      this.#sequence = Math.max(this.#sequence, data.sequence_number);
    }

    if (content) {
      if (type === "response.output_text.delta") {
        const item = this.#itemFor(data.item_id);
        if (item && typeof data.delta === "string") item.text += data.delta;
      }
      return;
    }

    switch (type) {
      case "response.created":
      case "response.in_progress":
        if (typeof data.response === "object" && data.response !== null) {
          this.#response = data.response as Record<string, unknown>;
        }
        break;
      case "response.output_item.added": {
        const item = data.item as Record<string, unknown> | undefined;
        if (item && typeof item.id === "string") {
          const open: OpenItem = {
            item,
            outputIndex: Number(data.output_index ?? 0),
            text: "",
            partIndex: undefined,
          };
          this.#open.set(item.id, open);
          this.#lastOpened = open;
        }
        break;
      }
      case "response.content_part.added": {
        const item = this.#itemFor(data.item_id);
        if (item) item.partIndex = Number(data.content_index ?? 0);
        break;
      }
      case "response.content_part.done": {
        const item = this.#itemFor(data.item_id);
        if (item) item.partIndex = undefined;
        break;
      }
      case "response.output_item.done": {
        const item = data.item as Record<string, unknown> | undefined;
        if (item) {
          this.#done.push(item);
          if (typeof item.id === "string") this.#open.delete(item.id);
        }
        break;
      }
    }
  }

  end(): Uint8Array {
    let text = "";
    const output = [...this.#done];

    for (const open of this.#open.values()) {
      const id = open.item.id;
      const isMessage = open.item.type === "message";
      const part = {
        type: "output_text",
        text: open.text,
        annotations: [],
        logprobs: [],
      };
      if (isMessage && open.partIndex !== undefined) {
        text += this.#event("response.output_text.done", {
          item_id: id,
          output_index: open.outputIndex,
          content_index: open.partIndex,
          text: open.text,
          logprobs: [],
        });
        text += this.#event("response.content_part.done", {
          item_id: id,
          output_index: open.outputIndex,
          content_index: open.partIndex,
          part,
        });
      }
      const item: Record<string, unknown> = {
        ...open.item,
        status: "incomplete",
      };
      if (isMessage) item.content = open.partIndex === undefined ? [] : [part];
      text += this.#event("response.output_item.done", {
        output_index: open.outputIndex,
        item,
      });
      output.push(item);
    }

    text += this.#event("response.incomplete", {
      response: {
        ...(this.#response ?? { id: "", object: "response" }),
        status: "incomplete",
        incomplete_details: { reason: "max_output_tokens" },
        output,
        usage: null,
      },
    });
    return encoder.encode(text);
  }

  #itemFor(id: unknown): OpenItem | undefined {
    if (typeof id === "string") return this.#open.get(id);
    return this.#lastOpened;
  }

  #event(type: string, fields: Record<string, unknown>): string {
    this.#sequence++;
    return sseEvent(type, { type, sequence_number: this.#sequence, ...fields });
  }
}
