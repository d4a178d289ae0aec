/**
 * Reads the token counts Ollama reports while a response streams through,
 * without holding back or changing a byte the client receives.
 *
 * The tap frames the stream into NDJSON lines or server-sent events, and looks
 * at each complete one with a substring test before deciding to parse it: only
 * the few events that carry counts or errors are JSON-parsed, and content
 * chunks are counted without parsing. The framing and the content test are
 * exported because `stream_cap.ts` must count exactly the chunks counted here,
 * and `usage_strip.ts` frames the same way.
 *
 * @module
 */

/** How the body is framed: `json` is a single, non-streamed JSON body. */
export type StreamFormat = "ndjson" | "sse" | "json";

/** Which API's events the body carries. */
export type TapDialect =
  | "native"
  | "openai_chat"
  | "openai_completions"
  | "anthropic"
  | "responses";

/** What the tap learned about one response. */
export interface TokenCounts {
  /** Prompt tokens, when the upstream reported them. */
  prompt?: number;
  /** Generated tokens, when the upstream reported them. */
  generated?: number;
  /**
   * Chunks that carried generated content, counted as they streamed (a lower
   * bound on generated tokens when the final usage never arrived: each
   * streamed chunk is about one token in Ollama).
   */
  contentChunks: number;
  /** The final usage arrived (`generated` is Ollama's own count). */
  complete: boolean;
  /** The message of an error the upstream reported inside the body. */
  errorInStream?: string;
}

/** Options for {@linkcode TokenCounter}. */
export interface TokenCounterOptions {
  format: StreamFormat;
  dialect: TapDialect;
  /**
   * Longest line, event or non-streamed body read for counts, in bytes.
   * Longer ones still pass through untouched but are not parsed (a
   * non-streamed body falls back to scanning its last 64 KiB). 16 MiB.
   */
  maxParseBytes?: number;
}

/** One complete NDJSON line or server-sent event, decoded as UTF-8. */
export interface StreamEvent {
  /** The SSE `event:` field; absent for NDJSON and for unnamed events. */
  readonly name?: string;
  /** The NDJSON line, or the SSE `data:` lines joined by `\n`. */
  readonly data: string;
}

const DEFAULT_MAX_PARSE_BYTES = 16 * 1024 * 1024;
const JSON_TAIL_BYTES = 64 * 1024;

/**
 * Reads token counts from the chunks of a body as they pass, never holding
 * or changing them. A malformed body is the client's to see: counting just
 * stops, and no method throws.
 *
 * @example
 * ```ts
 * const counter = new TokenCounter({ format: "ndjson", dialect: "native" });
 * for (const chunk of chunks) counter.push(chunk);
 * counter.end();
 * log.info("response", { tokens: counter.counts().generated });
 * ```
 */
export class TokenCounter {
  readonly #counts: TokenCounts = { contentChunks: 0, complete: false };
  readonly #reader: JsonBodyReader | EventCounter;

  constructor(options: TokenCounterOptions) {
    const maxParseBytes = options.maxParseBytes ?? DEFAULT_MAX_PARSE_BYTES;
    this.#reader = options.format === "json"
      ? new JsonBodyReader(options.dialect, this.#counts, maxParseBytes)
      : new EventCounter(options, this.#counts, maxParseBytes);
  }

  /** Counts what one chunk completes. */
  push(chunk: Uint8Array): void {
    try {
      this.#reader.push(chunk);
    } catch {
      // A malformed stream is the client's to see; counting just stops.
    }
  }

  /** The body ended normally: reads what only its end completes. */
  end(): void {
    try {
      this.#reader.end();
    } catch {
      // As above.
    }
  }

  /** What was counted until now (a copy). */
  counts(): TokenCounts {
    return { ...this.#counts };
  }
}

/**
 * Reads the token counts of a whole non-streamed body already in memory:
 * what a {@linkcode TokenCounter} with `format: "json"` reports for it.
 */
export function countTokensInBody(
  bytes: Uint8Array,
  dialect: TapDialect,
): TokenCounts {
  const counts: TokenCounts = { contentChunks: 0, complete: false };
  const reader = new JsonBodyReader(dialect, counts, DEFAULT_MAX_PARSE_BYTES);
  try {
    reader.push(bytes);
    reader.end();
  } catch {
    // A malformed body is the client's to see; it just carries no counts.
  }
  return counts;
}

/** Counts what one streamed (NDJSON or SSE) body carries. */
class EventCounter {
  readonly #dialect: TapDialect;
  readonly #counts: TokenCounts;
  readonly #framer: EventFramer;

  constructor(
    options: TokenCounterOptions,
    counts: TokenCounts,
    maxParseBytes: number,
  ) {
    this.#dialect = options.dialect;
    this.#counts = counts;
    this.#framer = new EventFramer(
      options.format === "sse" ? "sse" : "ndjson",
      { maxEventBytes: maxParseBytes },
    );
  }

  push(chunk: Uint8Array): void {
    this.#framer.push(chunk, (event) => this.#see(event));
  }

  end(): void {
    this.#framer.end((event) => this.#see(event));
  }

  #see(event: StreamEvent): void {
    if (isContentEvent(this.#dialect, event)) {
      this.#counts.contentChunks++;
      return;
    }
    readCountsFromEvent(this.#dialect, event, this.#counts);
  }
}

/** Keeps a non-streamed body (up to a limit) and reads it at the end. */
class JsonBodyReader {
  readonly #dialect: TapDialect;
  readonly #counts: TokenCounts;
  readonly #maxBytes: number;
  readonly #decoder = new TextDecoder();
  #parts: string[] = [];
  #bytes = 0;
  /** Past the limit, only the last JSON_TAIL_BYTES are kept. */
  #tailOnly = false;

  constructor(dialect: TapDialect, counts: TokenCounts, maxBytes: number) {
    this.#dialect = dialect;
    this.#counts = counts;
    this.#maxBytes = maxBytes;
  }

  push(chunk: Uint8Array): void {
    this.#parts.push(this.#decoder.decode(chunk, { stream: true }));
    this.#bytes += chunk.byteLength;
    if (this.#bytes > this.#maxBytes) {
      this.#tailOnly = true;
      const text = this.#parts.join("");
      this.#parts = [text.slice(-JSON_TAIL_BYTES)];
    }
  }

  end(): void {
    this.#parts.push(this.#decoder.decode());
    const text = this.#parts.join("");
    this.#parts = [];
    if (this.#tailOnly) {
      readCountsFromTail(this.#dialect, text, this.#counts);
      return;
    }
    readCountsFromBody(this.#dialect, parseJson(text), this.#counts);
  }
}

// --- Framing -------------------------------------------------------------

const LF = 0x0a;
const CR = 0x0d;

/** Options for {@linkcode EventFramer}. */
export interface EventFramerOptions {
  /**
   * Longest event kept for decoding, in bytes. A longer one is still framed
   * (its end is reported) but its `data` is empty. Default 16 MiB.
   */
  maxEventBytes?: number;
}

/**
 * Splits a byte stream into complete NDJSON lines or server-sent events,
 * across any chunk boundaries (inside a UTF-8 character, inside `data:`,
 * between `\r` and `\n`). Only the bytes of an unfinished line are copied and
 * kept; the chunks themselves are never modified.
 *
 * SSE follows the WHATWG rules: lines end in `\r\n`, `\n` or `\r`; `data:`
 * lines are joined by `\n`; one optional space after the colon is dropped;
 * comment lines (`:`) are ignored; an event is dispatched at a blank line and
 * an unterminated event at the end of the stream is discarded. NDJSON lines
 * end in `\n` (a `\r` before it is dropped); blank lines are skipped; a last
 * line without a newline is still reported by {@linkcode EventFramer.end}.
 */
export class EventFramer {
  readonly #format: "ndjson" | "sse";
  readonly #maxEventBytes: number;
  readonly #decoder = new TextDecoder();
  /** Copies of the bytes of the line still being received. */
  #partial: Uint8Array[] = [];
  #partialBytes = 0;
  /** The last chunk ended in `\r`: a `\n` starting the next one belongs to it. */
  #skipLineFeed = false;
  /** SSE: fields of the event being assembled. */
  #eventName: string | undefined;
  #data: string[] = [];
  #hasData = false;
  #eventBytes = 0;
  #eventTooLong = false;

  constructor(format: "ndjson" | "sse", options: EventFramerOptions = {}) {
    this.#format = format;
    this.#maxEventBytes = options.maxEventBytes ?? DEFAULT_MAX_PARSE_BYTES;
  }

  /**
   * Feeds one chunk. `onEvent` gets each event completed by it, with the
   * offset in `chunk` just past the event's last line terminator; returning
   * `false` stops framing this chunk (the rest of it is not looked at).
   */
  push(
    chunk: Uint8Array,
    onEvent: (event: StreamEvent, end: number) => boolean | void,
  ): void {
    let position = 0;
    if (this.#skipLineFeed) {
      this.#skipLineFeed = false;
      if (chunk.length > 0 && chunk[0] === LF) position = 1;
    }

    while (position < chunk.length) {
      const lineEnd = this.#findLineEnd(chunk, position);
      if (lineEnd === -1) {
        this.#keepPartial(chunk.subarray(position));
        return;
      }

      let next = lineEnd + 1;
      if (chunk[lineEnd] === CR) {
        if (next === chunk.length) this.#skipLineFeed = true;
        else if (chunk[next] === LF) next++;
      }
      const line = this.#takeLine(chunk.subarray(position, lineEnd));
      position = next;

      const event = this.#acceptLine(line);
      if (event && onEvent(event, position) === false) return;
    }
  }

  /** The stream ended: reports a last NDJSON line without a newline. */
  end(onEvent: (event: StreamEvent) => void): void {
    if (this.#format !== "ndjson" || this.#partialBytes === 0) return;
    const line = this.#takeLine(new Uint8Array(0));
    const event = this.#acceptLine(line);
    if (event) onEvent(event);
  }

  #findLineEnd(chunk: Uint8Array, from: number): number {
    const lf = chunk.indexOf(LF, from);
    if (this.#format === "ndjson") return lf;
    const cr = chunk.indexOf(CR, from);
    if (cr === -1) return lf;
    if (lf === -1) return cr;
    return Math.min(cr, lf);
  }

  #keepPartial(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.#partialBytes += bytes.length;
    if (this.#partialBytes > this.#maxEventBytes) {
      this.#partial = [];
      this.#eventTooLong = true;
      return;
    }
    this.#partial.push(bytes.slice());
  }

  /** Decodes the line made of the kept partial bytes and `rest`. */
  #takeLine(rest: Uint8Array): string | undefined {
    const length = this.#partialBytes + rest.length;
    const tooLong = this.#eventTooLong ||
      this.#eventBytes + length > this.#maxEventBytes;
    const parts = this.#partial;
    this.#partial = [];
    this.#partialBytes = 0;
    this.#eventBytes += length;
    if (tooLong) {
      this.#eventTooLong = true;
      return undefined;
    }
    if (parts.length === 0) return this.#decoder.decode(rest);
    parts.push(rest);
    return this.#decoder.decode(concat(parts, length));
  }

  /**
   * Takes one line (undefined when too long to decode) and returns the event
   * it completes, if any.
   */
  #acceptLine(line: string | undefined): StreamEvent | undefined {
    if (this.#format === "ndjson") return this.#acceptNdjsonLine(line);
    return this.#acceptSseLine(line);
  }

  #acceptNdjsonLine(line: string | undefined): StreamEvent | undefined {
    const tooLong = this.#eventTooLong;
    this.#eventTooLong = false;
    this.#eventBytes = 0;
    if (tooLong || line === undefined) return { data: "" };
    const text = line.endsWith("\r") ? line.slice(0, -1) : line;
    if (text.trim() === "") return undefined;
    return { data: text };
  }

  #acceptSseLine(line: string | undefined): StreamEvent | undefined {
    if (line === "") return this.#dispatch();
    if (line === undefined || line.startsWith(":")) return undefined;

    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);

    if (field === "data") {
      this.#data.push(value);
      this.#hasData = true;
    } else if (field === "event") {
      this.#eventName = value;
    }
    return undefined;
  }

  #dispatch(): StreamEvent | undefined {
    const name = this.#eventName;
    const hasData = this.#hasData;
    const tooLong = this.#eventTooLong;
    const data = this.#data.join("\n");
    this.#eventName = undefined;
    this.#data = [];
    this.#hasData = false;
    this.#eventBytes = 0;
    this.#eventTooLong = false;

    if (tooLong) return { name, data: "" };
    if (!hasData) return undefined;
    return name === undefined || name === "" ? { data } : { name, data };
  }
}

function concat(parts: Uint8Array[], length: number): Uint8Array {
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// --- What an event means -------------------------------------------------

/*
 * The cheap tests below look for a JSON key followed by its value, such as
 * `"done":false`. Inside a JSON string every `"` is escaped as `\"`, so such a
 * key-and-value pattern cannot be matched by generated text; only the
 * object's own keys match.
 */
const NATIVE_NOT_DONE = /"done"\s*:\s*false/;
const NATIVE_DONE = /"done"\s*:\s*true/;
const NATIVE_COUNT = /"(?:prompt_)?eval_count"\s*:/;
const ERROR_KEY = /"error"\s*:/;
const OPENAI_CONTENT = /"finish_reason"\s*:\s*null/;
const OPENAI_USAGE = /"usage"\s*:\s*\{/;
const OPENAI_EMPTY_CHOICES = /"choices"\s*:\s*\[\s*\]/;
const OPENAI_CHOICES = /"choices"\s*:/;
const TYPE_FIELD = /"type"\s*:\s*"([^"\\]*)"/;

/**
 * Whether `event` carries generated content (one chunk, about one token):
 * native lines with `"done": false`; OpenAI chunks whose `finish_reason` is
 * still null; Anthropic `content_block_delta`; Responses `response.*.delta`.
 */
export function isContentEvent(
  dialect: TapDialect,
  event: StreamEvent,
): boolean {
  switch (dialect) {
    case "native":
      return NATIVE_NOT_DONE.test(event.data);
    case "openai_chat":
    case "openai_completions":
      return OPENAI_CONTENT.test(event.data);
    case "anthropic":
      return eventType(event) === "content_block_delta";
    case "responses": {
      const type = eventType(event);
      return type !== undefined && type.startsWith("response.") &&
        type.endsWith(".delta");
    }
  }
}

/**
 * The event's type: the SSE `event:` name, or else the first `"type"` in its
 * data (Anthropic and Responses events carry both; the name is cheaper).
 */
export function eventType(event: StreamEvent): string | undefined {
  return event.name ?? TYPE_FIELD.exec(event.data)?.[1];
}

/** Updates `counts` from an event that is not a content chunk. */
function readCountsFromEvent(
  dialect: TapDialect,
  event: StreamEvent,
  counts: TokenCounts,
): void {
  const data = event.data;
  switch (dialect) {
    case "native":
      if (
        NATIVE_DONE.test(data) || NATIVE_COUNT.test(data) ||
        ERROR_KEY.test(data)
      ) {
        readCountsFromBody("native", parseJson(data), counts);
      }
      return;

    case "openai_chat":
    case "openai_completions":
      if (data === "[DONE]") return;
      if (
        OPENAI_USAGE.test(data) &&
        (OPENAI_EMPTY_CHOICES.test(data) || !OPENAI_CHOICES.test(data))
      ) {
        readCountsFromBody(dialect, parseJson(data), counts);
      } else if (ERROR_KEY.test(data)) {
        readError(parseJson(data), counts);
      }
      return;

    case "anthropic":
      readAnthropicEvent(eventType(event), data, counts);
      return;

    case "responses":
      readResponsesEvent(eventType(event), data, counts);
      return;
  }
}

function readAnthropicEvent(
  type: string | undefined,
  data: string,
  counts: TokenCounts,
): void {
  if (type === "message_start") {
    const usage = field(field(parseJson(data), "message"), "usage");
    setCount(counts, "prompt", field(usage, "input_tokens"));
  } else if (type === "message_delta") {
    // Ollama puts its real prompt count here too; message_start may only
    // carry an estimate made before the prompt was evaluated.
    const usage = field(parseJson(data), "usage");
    const input = field(usage, "input_tokens");
    if (typeof input === "number" && input > 0) {
      setCount(counts, "prompt", input);
    }
    if (setCount(counts, "generated", field(usage, "output_tokens"))) {
      counts.complete = true;
    }
  } else if (type === "error") {
    readError(parseJson(data), counts);
  }
}

function readResponsesEvent(
  type: string | undefined,
  data: string,
  counts: TokenCounts,
): void {
  if (
    type === "response.completed" || type === "response.incomplete" ||
    type === "response.failed"
  ) {
    const response = field(parseJson(data), "response");
    readCountsFromBody("responses", response, counts);
  } else if (type === "error") {
    readError(parseJson(data), counts);
  }
}

/**
 * Reads counts from a whole object: a native final object, an OpenAI body or
 * usage chunk, an Anthropic message, a Responses response object.
 */
function readCountsFromBody(
  dialect: TapDialect,
  body: unknown,
  counts: TokenCounts,
): void {
  readError(body, counts);
  let prompt: unknown;
  let generated: unknown;
  switch (dialect) {
    case "native":
      prompt = field(body, "prompt_eval_count");
      generated = field(body, "eval_count");
      break;
    case "openai_chat":
    case "openai_completions": {
      const usage = field(body, "usage");
      prompt = field(usage, "prompt_tokens");
      generated = field(usage, "completion_tokens");
      break;
    }
    case "anthropic":
    case "responses": {
      const usage = field(body, "usage");
      prompt = field(usage, "input_tokens");
      generated = field(usage, "output_tokens");
      break;
    }
  }
  setCount(counts, "prompt", prompt);
  if (setCount(counts, "generated", generated)) counts.complete = true;
}

/** Counts from the tail of a body too large to keep whole: last match wins. */
function readCountsFromTail(
  dialect: TapDialect,
  tail: string,
  counts: TokenCounts,
): void {
  const [promptKey, generatedKey] = dialect === "native"
    ? ["prompt_eval_count", "eval_count"]
    : dialect === "anthropic" || dialect === "responses"
    ? ["input_tokens", "output_tokens"]
    : ["prompt_tokens", "completion_tokens"];
  setCount(counts, "prompt", lastNumber(tail, promptKey));
  if (setCount(counts, "generated", lastNumber(tail, generatedKey))) {
    counts.complete = true;
  }
}

function lastNumber(text: string, key: string): number | undefined {
  const pattern = new RegExp(`"${key}"\\s*:\\s*(\\d+)`, "g");
  let last: number | undefined;
  for (const match of text.matchAll(pattern)) last = Number(match[1]);
  return last;
}

/** Records the error message of a native, OpenAI, Anthropic or Responses error. */
function readError(body: unknown, counts: TokenCounts): void {
  const error = field(body, "error");
  if (typeof error === "string" && error !== "") {
    counts.errorInStream = error;
    return;
  }
  const message = field(error, "message");
  if (typeof message === "string" && message !== "") {
    counts.errorInStream = message;
  }
}

function setCount(
  counts: TokenCounts,
  key: "prompt" | "generated",
  value: unknown,
): boolean {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    return false;
  }
  counts[key] = value;
  return true;
}

function field(value: unknown, key: string): unknown {
  if (typeof value !== "object" || value === null) return undefined;
  return (value as Record<string, unknown>)[key];
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
