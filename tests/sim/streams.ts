/**
 * Response bodies of the Ollama simulator, per dialect: native NDJSON
 * (`/api/generate`, `/api/chat`), OpenAI server-sent events
 * (`/v1/chat/completions`, `/v1/completions`), Anthropic events
 * (`/v1/messages`) and Responses events (`/v1/responses`), streamed or as
 * one JSON object, plus each dialect's error shape.
 *
 * @module
 */

/** Which response format an inference route speaks. */
export type StreamDialect =
  | "generate"
  | "chat"
  | "openai_chat"
  | "openai_completion"
  | "anthropic"
  | "responses";

/** The shape of error bodies on a route. */
export type ErrorDialect = "native" | "openai" | "anthropic";

/** One piece of a streamed body. */
export interface Frame {
  readonly data: string;
  /** The simulator waits `chunkDelayMs` before writing this frame. */
  readonly paced: boolean;
}

/** What the simulated model produced for one request. */
export interface Generation {
  readonly model: string;
  /** The generated tokens, in order. */
  readonly tokens: readonly string[];
  readonly promptTokens: number;
  /** `length` when the cap cut the answer. */
  readonly doneReason: "stop" | "length";
  /** OpenAI `stream_options.include_usage`. */
  readonly includeUsage?: boolean;
  /** `/api/generate` context to return. */
  readonly context?: readonly number[];
}

const WORDS = [
  "The",
  " quick",
  " brown",
  " fox",
  " jumps",
  " over",
  " the",
  " lazy",
  " dog",
  ".",
];

/** The `count` tokens the simulated model answers with. */
export function simulatedTokens(count: number): string[] {
  return Array.from({ length: count }, (_, i) => WORDS[i % WORDS.length]);
}

/** A rough token count for texts (one token per four characters, min 1). */
export function countPromptTokens(texts: readonly string[]): number {
  const chars = texts.reduce((n, t) => n + t.length, 0);
  return Math.max(1, Math.ceil(chars / 4));
}

function now(): string {
  return new Date().toISOString();
}

function unix(): number {
  return Math.floor(Date.now() / 1000);
}

function nativeFinal(
  dialect: "generate" | "chat",
  gen: Generation,
  text: string,
): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model: gen.model,
    created_at: now(),
    ...(dialect === "chat"
      ? { message: { role: "assistant", content: text } }
      : { response: text }),
    done: true,
    done_reason: gen.doneReason,
    ...(dialect === "generate"
      ? {
        context: gen.context ?? [1, 2, 3, ...gen.tokens.map((_, i) => i + 100)],
      }
      : {}),
    total_duration: 1_000_000 * (gen.tokens.length + 2),
    load_duration: 500_000,
    prompt_eval_count: gen.promptTokens,
    prompt_eval_duration: 200_000,
    eval_count: gen.tokens.length,
    eval_duration: 1_000_000 * gen.tokens.length,
  };
  return body;
}

function sse(data: unknown): string {
  return `data: ${JSON.stringify(data)}\n\n`;
}

function event(name: string, data: unknown): string {
  return `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
}

function openaiUsage(gen: Generation): Record<string, number> {
  return {
    prompt_tokens: gen.promptTokens,
    completion_tokens: gen.tokens.length,
    total_tokens: gen.promptTokens + gen.tokens.length,
  };
}

function anthropicStop(gen: Generation): string {
  return gen.doneReason === "length" ? "max_tokens" : "end_turn";
}

/** The `Content-Type` of a streamed body in `dialect`. */
export function streamContentType(dialect: StreamDialect): string {
  return dialect === "generate" || dialect === "chat"
    ? "application/x-ndjson"
    : "text/event-stream";
}

/**
 * Every frame of a streamed answer in `dialect`, the paced ones being those
 * written after a chunk delay (one per generated token, plus the end).
 */
export function streamFrames(
  dialect: StreamDialect,
  gen: Generation,
): Frame[] {
  const text = gen.tokens.join("");
  const frames: Frame[] = [];
  const paced = (data: string) => frames.push({ data, paced: true });
  const at = (data: string) => frames.push({ data, paced: false });

  switch (dialect) {
    case "generate":
    case "chat":
      for (const token of gen.tokens) {
        paced(
          JSON.stringify({
            model: gen.model,
            created_at: now(),
            ...(dialect === "chat"
              ? { message: { role: "assistant", content: token } }
              : { response: token }),
            done: false,
          }) + "\n",
        );
      }
      paced(JSON.stringify(nativeFinal(dialect, { ...gen }, "")) + "\n");
      break;

    case "openai_chat": {
      const id = "chatcmpl-" + crypto.randomUUID().slice(0, 8);
      const base = {
        id,
        object: "chat.completion.chunk",
        created: unix(),
        model: gen.model,
        system_fingerprint: "fp_ollama",
      };
      for (const token of gen.tokens) {
        paced(sse({
          ...base,
          choices: [{
            index: 0,
            delta: { role: "assistant", content: token },
            finish_reason: null,
          }],
        }));
      }
      paced(sse({
        ...base,
        choices: [{
          index: 0,
          delta: { role: "assistant", content: "" },
          finish_reason: gen.doneReason,
        }],
      }));
      if (gen.includeUsage) {
        at(sse({ ...base, choices: [], usage: openaiUsage(gen) }));
      }
      at("data: [DONE]\n\n");
      break;
    }

    case "openai_completion": {
      const id = "cmpl-" + crypto.randomUUID().slice(0, 8);
      const base = {
        id,
        object: "text_completion",
        created: unix(),
        model: gen.model,
        system_fingerprint: "fp_ollama",
      };
      for (const token of gen.tokens) {
        paced(sse({
          ...base,
          choices: [{ index: 0, text: token, finish_reason: null }],
        }));
      }
      paced(sse({
        ...base,
        choices: [{ index: 0, text: "", finish_reason: gen.doneReason }],
      }));
      if (gen.includeUsage) {
        at(sse({ ...base, choices: [], usage: openaiUsage(gen) }));
      }
      at("data: [DONE]\n\n");
      break;
    }

    case "anthropic": {
      const id = "msg_" + crypto.randomUUID().replaceAll("-", "").slice(0, 24);
      at(event("message_start", {
        type: "message_start",
        message: {
          id,
          type: "message",
          role: "assistant",
          model: gen.model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: gen.promptTokens, output_tokens: 0 },
        },
      }));
      at(event("content_block_start", {
        type: "content_block_start",
        index: 0,
        content_block: { type: "text", text: "" },
      }));
      for (const token of gen.tokens) {
        paced(event("content_block_delta", {
          type: "content_block_delta",
          index: 0,
          delta: { type: "text_delta", text: token },
        }));
      }
      paced(event("content_block_stop", {
        type: "content_block_stop",
        index: 0,
      }));
      at(event("message_delta", {
        type: "message_delta",
        delta: { stop_reason: anthropicStop(gen), stop_sequence: null },
        usage: {
          input_tokens: gen.promptTokens,
          output_tokens: gen.tokens.length,
        },
      }));
      at(event("message_stop", { type: "message_stop" }));
      break;
    }

    case "responses": {
      const id = "resp_" + crypto.randomUUID().slice(0, 8);
      const itemId = "msg_" + crypto.randomUUID().slice(0, 8);
      let seq = 0;
      const response = (status: string, extra: Record<string, unknown>) => ({
        id,
        object: "response",
        created_at: unix(),
        status,
        model: gen.model,
        ...extra,
      });
      at(event("response.created", {
        type: "response.created",
        sequence_number: seq++,
        response: response("in_progress", { output: [] }),
      }));
      at(event("response.in_progress", {
        type: "response.in_progress",
        sequence_number: seq++,
        response: response("in_progress", { output: [] }),
      }));
      for (const token of gen.tokens) {
        paced(event("response.output_text.delta", {
          type: "response.output_text.delta",
          sequence_number: seq++,
          item_id: itemId,
          output_index: 0,
          content_index: 0,
          delta: token,
        }));
      }
      paced(event("response.output_text.done", {
        type: "response.output_text.done",
        sequence_number: seq++,
        item_id: itemId,
        output_index: 0,
        content_index: 0,
        text,
      }));
      at(event("response.completed", {
        type: "response.completed",
        sequence_number: seq++,
        response: response(
          gen.doneReason === "length" ? "incomplete" : "completed",
          responsesOutput(gen, itemId, text),
        ),
      }));
      break;
    }
  }
  return frames;
}

function responsesOutput(
  gen: Generation,
  itemId: string,
  text: string,
): Record<string, unknown> {
  return {
    output: [{
      id: itemId,
      type: "message",
      status: "completed",
      role: "assistant",
      content: [{ type: "output_text", text, annotations: [] }],
    }],
    ...(gen.doneReason === "length"
      ? { incomplete_details: { reason: "max_output_tokens" } }
      : {}),
    usage: {
      input_tokens: gen.promptTokens,
      output_tokens: gen.tokens.length,
      total_tokens: gen.promptTokens + gen.tokens.length,
    },
  };
}

/** The whole answer as one JSON object (`"stream": false`). */
export function singleBody(
  dialect: StreamDialect,
  gen: Generation,
): Record<string, unknown> {
  const text = gen.tokens.join("");
  switch (dialect) {
    case "generate":
    case "chat":
      return nativeFinal(dialect, gen, text);
    case "openai_chat":
      return {
        id: "chatcmpl-" + crypto.randomUUID().slice(0, 8),
        object: "chat.completion",
        created: unix(),
        model: gen.model,
        system_fingerprint: "fp_ollama",
        choices: [{
          index: 0,
          message: { role: "assistant", content: text },
          finish_reason: gen.doneReason,
        }],
        usage: openaiUsage(gen),
      };
    case "openai_completion":
      return {
        id: "cmpl-" + crypto.randomUUID().slice(0, 8),
        object: "text_completion",
        created: unix(),
        model: gen.model,
        system_fingerprint: "fp_ollama",
        choices: [{ index: 0, text, finish_reason: gen.doneReason }],
        usage: openaiUsage(gen),
      };
    case "anthropic":
      return {
        id: "msg_" + crypto.randomUUID().replaceAll("-", "").slice(0, 24),
        type: "message",
        role: "assistant",
        model: gen.model,
        content: [{ type: "text", text }],
        stop_reason: anthropicStop(gen),
        stop_sequence: null,
        usage: {
          input_tokens: gen.promptTokens,
          output_tokens: gen.tokens.length,
        },
      };
    case "responses": {
      const itemId = "msg_" + crypto.randomUUID().slice(0, 8);
      return {
        id: "resp_" + crypto.randomUUID().slice(0, 8),
        object: "response",
        created_at: unix(),
        status: gen.doneReason === "length" ? "incomplete" : "completed",
        model: gen.model,
        ...responsesOutput(gen, itemId, text),
      };
    }
  }
}

/** The frame that reports a failure in the middle of a stream. */
export function errorFrame(dialect: StreamDialect, message: string): string {
  switch (dialect) {
    case "generate":
    case "chat":
      return JSON.stringify({ error: message }) + "\n";
    case "openai_chat":
    case "openai_completion":
      return sse({
        error: { message, type: "api_error", param: null, code: null },
      });
    case "anthropic":
      return event("error", {
        type: "error",
        error: { type: "api_error", message },
      });
    case "responses":
      return event("error", {
        type: "error",
        code: "api_error",
        message,
        param: null,
      });
  }
}

function openaiErrorType(status: number): string {
  if (status === 400) return "invalid_request_error";
  if (status === 404) return "not_found_error";
  return "api_error";
}

function anthropicErrorType(status: number): string {
  const types: Record<number, string> = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
  };
  return types[status] ?? "api_error";
}

/** An error body in the route's dialect (shared doc §6). */
export function errorBody(
  dialect: ErrorDialect,
  error: { status: number; message: string },
): Record<string, unknown> {
  switch (dialect) {
    case "native":
      return { error: error.message };
    case "openai":
      return {
        error: {
          message: error.message,
          type: openaiErrorType(error.status),
          param: null,
          code: null,
        },
      };
    case "anthropic":
      return {
        type: "error",
        error: {
          type: anthropicErrorType(error.status),
          message: error.message,
        },
        request_id: "req_" +
          crypto.randomUUID().replaceAll("-", "").slice(0, 24),
      };
  }
}
