/**
 * A simulated Ollama server for Butler's tests: real sockets, Ollama's
 * routes, gin's router behaviour (trailing-slash redirects, 404/405), the
 * loopback Host and CORS checks, bodies read with Go's rules, model names
 * resolved as Ollama does, and streamed answers in every dialect. Each
 * request leaves a {@linkcode SimRecord} saying what Ollama would have acted
 * on, which is what Butler's decisions are checked against.
 *
 * Independent of Butler's `src/`: it is the reference.
 *
 * @example
 * ```ts
 * const sim = await startOllamaSim({ port: 0 });
 * await fetch(`${sim.url}/api/tags`);
 * console.log(sim.records[0].path);
 * await sim.close();
 * ```
 *
 * @module
 */

import { zstdDecompressSync } from "node:zlib";
import {
  bindJson,
  CHAT_COMPLETION_REQUEST,
  CHAT_REQUEST,
  checkOptions,
  COMPLETION_REQUEST,
  COPY_REQUEST,
  CREATE_REQUEST,
  DELETE_REQUEST,
  EMBED_REQUEST,
  EMBEDDING_REQUEST,
  GENERATE_REQUEST,
  type GoDecodeResult,
  type GoType,
  type GoValue,
  intOption,
  MESSAGES_REQUEST,
  OPENAI_EMBED_REQUEST,
  PULL_REQUEST,
  RESPONSES_REQUEST,
  SHOW_REQUEST,
  unmarshalWhole,
  WEB_REQUEST,
} from "./go_decode.ts";
import {
  formatModelName,
  goTrimSpace,
  isValidModelName,
  type ModelSource,
  parseModelName,
  parseModelRef,
  resolveModelRef,
} from "./model_ref.ts";
import {
  countPromptTokens,
  errorBody,
  type ErrorDialect,
  errorFrame,
  type Frame,
  type Generation,
  simulatedTokens,
  singleBody,
  streamContentType,
  type StreamDialect,
  streamFrames,
} from "./streams.ts";

/** One request the simulator received. */
export interface SimRecord {
  method: string;
  /** The raw request path, as sent. */
  path: string;
  /** The raw query with its leading `?`, or "". */
  query: string;
  /** Request headers, lower-cased names. */
  headers: Record<string, string>;
  /** The body bytes exactly as received (before any decompression). */
  rawBody: Uint8Array;
  /**
   * What Ollama would act on, decoded with Go's rules. Set whenever the
   * body decoded, even when Ollama then answers an error (see `error`).
   */
  acted?: ActedOn;
  /** The error Ollama would answer, when it would. */
  error?: string;
  /** The client went away before the response body finished. */
  cancelled: boolean;
}

/** What Ollama would act on for one request. */
export interface ActedOn {
  /**
   * Resolved model references, full names `host/namespace/model:tag`
   * (for copy `[source, destination]`, for create `[model, from]`).
   */
  models: string[];
  /** The explicit source of the (first) model reference, if any. */
  source?: ModelSource;
  /** Native `options.num_predict` after Go's integer truncation. */
  numPredict?: number;
  /** Native `options.num_ctx` after Go's integer truncation. */
  numCtx?: number;
  /** `/v1/chat/completions`, `/v1/completions`, `/v1/messages` cap. */
  maxTokens?: number;
  /** `/v1/responses` cap. */
  maxOutputTokens?: number;
  /** Native `keep_alive` as decoded (seconds or a duration string). */
  keepAlive?: unknown;
  stream: boolean;
  /** Every text that reaches the model (shared doc §5), in order. */
  texts: string[];
  /** `/api/generate` context token ids. */
  context?: number[];
  /** Ollama would forward this request to ollama.com. */
  forwardedToCloud?: boolean;
}

/** Simulator settings; all can be changed at run time with `set`. */
export interface SimOptions {
  /** Port to listen on; 0 (default) picks a free one. */
  port?: number;
  /** Default 127.0.0.1. */
  hostname?: string;
  /** Installed models. */
  models?: string[];
  /** Delay before each streamed chunk, default 20 ms. */
  chunkDelayMs?: number;
  /** Tokens per answer, default 5 (bounded by the request's cap). */
  chunks?: number;
  /** Delay before response headers on inference routes (model loading). */
  headerDelayMs?: number;
  /** `/api/version`, default "0.13.0". */
  version?: string;
  /** After this many chunks, streams send an error and end. */
  failMidStreamAfter?: number;
  /** Extra allowed browser origins, as `OLLAMA_ORIGINS` would add. */
  origins?: string[];
  /**
   * Generate past `max_tokens` on `/v1/chat/completions`, `/v1/completions`
   * and `/v1/messages`, as some Ollama versions did (default false).
   */
  ignoreMaxTokens?: boolean;
}

/** A running simulator. */
export interface OllamaSim {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  readonly port: number;
  /** One record per request, pushed when the request arrives. */
  readonly records: SimRecord[];
  /** Forgets the records. */
  clear(): void;
  /** Changes settings (delays, models, …) at run time. */
  set(options: Partial<SimOptions>): void;
  /** Stops listening and aborts open streams. */
  close(): Promise<void>;
}

const DEFAULT_MODELS = [
  "llama3.2:latest",
  "llama3.2:1b",
  "qwen2.5:7b",
  "nomic-embed-text:latest",
  "gpt-oss:120b-cloud",
];

// ---------------------------------------------------------------------------
// Router: gin's tree with Ollama's routes, matched on the decoded path.

type RouteName =
  | "root"
  | "version"
  | "status"
  | "tags"
  | "ps"
  | "show"
  | "generate"
  | "chat"
  | "embed"
  | "embeddings"
  | "pull"
  | "push"
  | "create"
  | "copy"
  | "delete"
  | "blob_upload"
  | "blob_head"
  | "me"
  | "signout"
  | "user_keys"
  | "web_search"
  | "web_fetch"
  | "recommendations"
  | "v1_chat"
  | "v1_completions"
  | "v1_embeddings"
  | "v1_models"
  | "v1_model"
  | "v1_responses"
  | "v1_transcriptions"
  | "v1_messages";

const ROUTES: readonly (readonly [string, string, RouteName])[] = [
  ["HEAD", "/", "root"],
  ["GET", "/", "root"],
  ["HEAD", "/api/version", "version"],
  ["GET", "/api/version", "version"],
  ["GET", "/api/status", "status"],
  ["POST", "/api/pull", "pull"],
  ["POST", "/api/push", "push"],
  ["HEAD", "/api/tags", "tags"],
  ["GET", "/api/tags", "tags"],
  ["POST", "/api/show", "show"],
  ["DELETE", "/api/delete", "delete"],
  ["POST", "/api/me", "me"],
  ["POST", "/api/signout", "signout"],
  ["DELETE", "/api/user/keys/:encodedKey", "user_keys"],
  ["POST", "/api/create", "create"],
  ["POST", "/api/blobs/:digest", "blob_upload"],
  ["HEAD", "/api/blobs/:digest", "blob_head"],
  ["POST", "/api/copy", "copy"],
  ["POST", "/api/experimental/web_search", "web_search"],
  ["POST", "/api/experimental/web_fetch", "web_fetch"],
  ["GET", "/api/experimental/model-recommendations", "recommendations"],
  ["GET", "/api/ps", "ps"],
  ["POST", "/api/generate", "generate"],
  ["POST", "/api/chat", "chat"],
  ["POST", "/api/embed", "embed"],
  ["POST", "/api/embeddings", "embeddings"],
  ["POST", "/v1/chat/completions", "v1_chat"],
  ["POST", "/v1/completions", "v1_completions"],
  ["POST", "/v1/embeddings", "v1_embeddings"],
  ["GET", "/v1/models", "v1_models"],
  ["GET", "/v1/models/:model", "v1_model"],
  ["POST", "/v1/responses", "v1_responses"],
  ["POST", "/v1/audio/transcriptions", "v1_transcriptions"],
  ["POST", "/v1/messages", "v1_messages"],
];

// The /v1 POST routes behind Ollama's cloud passthrough middleware, which
// decompresses zstd bodies and forwards `:cloud` models by their exact
// `model` key.
const CLOUD_PASSTHROUGH = new Set<RouteName>([
  "v1_chat",
  "v1_completions",
  "v1_embeddings",
  "v1_responses",
  "v1_messages",
]);

type RouteOutcome =
  | { kind: "route"; name: RouteName; params: Record<string, string> }
  | { kind: "redirect"; location: string }
  | { kind: "not_allowed" }
  | { kind: "not_found" };

function matchPattern(
  pattern: string,
  path: string,
): Record<string, string> | undefined {
  const want = pattern.split("/");
  const got = path.split("/");
  if (want.length !== got.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    if (want[i].startsWith(":")) {
      if (got[i] === "") return undefined;
      params[want[i].slice(1)] = got[i];
    } else if (want[i] !== got[i]) {
      return undefined;
    }
  }
  return params;
}

function findRoute(method: string, path: string): RouteOutcome {
  for (const [m, pattern, name] of ROUTES) {
    if (m !== method) continue;
    const params = matchPattern(pattern, path);
    if (params) return { kind: "route", name, params };
  }
  if (method !== "CONNECT" && path !== "/" && path.endsWith("/")) {
    const trimmed = path.slice(0, -1);
    if (ROUTES.some(([m, p]) => m === method && matchPattern(p, trimmed))) {
      return { kind: "redirect", location: trimmed };
    }
  }
  if (ROUTES.some(([m, p]) => m !== method && matchPattern(p, path))) {
    return { kind: "not_allowed" };
  }
  return { kind: "not_found" };
}

/** The raw path and query of a request target, as sent. */
function splitTarget(url: string): { path: string; query: string } {
  const schemeEnd = url.indexOf("://");
  const start = schemeEnd < 0 ? 0 : url.indexOf("/", schemeEnd + 3);
  const target = start < 0 ? "/" : url.slice(start);
  const q = target.indexOf("?");
  return q < 0
    ? { path: target, query: "" }
    : { path: target.slice(0, q), query: target.slice(q) };
}

/** Go's `url.Parse` path unescaping; `undefined` for a bad escape. */
function goUnescapePath(path: string): string | undefined {
  if (!path.includes("%")) return path;
  const bytes: number[] = [];
  const raw = new TextEncoder().encode(path);
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] !== 0x25) {
      bytes.push(raw[i]);
      continue;
    }
    const hex = String.fromCharCode(raw[i + 1] ?? 0, raw[i + 2] ?? 0);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return undefined;
    bytes.push(parseInt(hex, 16));
    i += 2;
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

// ---------------------------------------------------------------------------
// Middleware: gin-contrib/cors with Ollama's defaults, then the Host check.

const BROWSER_EXTENSIONS = [
  "chrome-extension://",
  "safari-extension://",
  "moz-extension://",
  "ms-browser-extension://",
];

function defaultOrigins(extra: readonly string[]): string[] {
  const origins = [...extra];
  for (const host of ["localhost", "127.0.0.1", "0.0.0.0"]) {
    origins.push(
      `http://${host}`,
      `https://${host}`,
      `http://${host}:*`,
      `https://${host}:*`,
    );
  }
  origins.push(
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
  );
  return origins;
}

function originAllowed(origin: string, extra: readonly string[]): boolean {
  if (BROWSER_EXTENSIONS.some((p) => origin.startsWith(p))) return true;
  for (const allowed of defaultOrigins(extra)) {
    if (allowed === "*" || allowed === origin) return true;
    const star = allowed.indexOf("*");
    if (star < 0) continue;
    const prefix = allowed.slice(0, star);
    const suffix = allowed.slice(star + 1);
    if (
      origin.length >= prefix.length + suffix.length &&
      origin.startsWith(prefix) && origin.endsWith(suffix)
    ) return true;
  }
  return false;
}

function parseIPv4(text: string): number[] | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return undefined;
    out.push(Number(p));
  }
  return out;
}

/** Go's `netip.ParseAddr` then loopback / private / unspecified. */
function isLocalAddress(host: string): boolean | undefined {
  const v4 = parseIPv4(host);
  if (v4) {
    const [a, b] = v4;
    return a === 127 || a === 10 || (a === 172 && b >= 16 && b < 32) ||
      (a === 192 && b === 168) || v4.every((x) => x === 0) ||
      localInterfaceAddresses().has(host);
  }
  if (!host.includes(":") || host.includes("[")) return undefined;
  let normalized: string;
  try {
    normalized = new URL(`http://[${host.split("%")[0]}]/`).hostname;
  } catch {
    return undefined;
  }
  const bare = normalized.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(bare);
  if (mapped) {
    const hi = parseInt(mapped[1], 16);
    const lo = parseInt(mapped[2], 16);
    const v4text = [hi >> 8, hi & 255, lo >> 8, lo & 255].join(".");
    return isLocalAddress(v4text);
  }
  return bare === "::1" || bare === "::" || /^f[cd]/.test(bare) ||
    localInterfaceAddresses().has(bare);
}

function localInterfaceAddresses(): Set<string> {
  // Ask nothing: without --allow-sys, loopback and private ranges suffice.
  if (!sysGranted("networkInterfaces")) return new Set();
  try {
    return new Set(Deno.networkInterfaces().map((i) => i.address));
  } catch {
    return new Set(); // no --allow-sys: loopback and private ranges suffice
  }
}

function sysGranted(kind: "hostname" | "networkInterfaces"): boolean {
  return Deno.permissions.querySync({ name: "sys", kind }).state === "granted";
}

function systemHostname(): string | undefined {
  if (!sysGranted("hostname")) return undefined;
  try {
    return Deno.hostname().toLowerCase();
  } catch {
    return undefined;
  }
}

/** `net.SplitHostPort`, or `undefined` when it would fail. */
function splitHostPort(hostport: string): string | undefined {
  if (hostport.startsWith("[")) {
    const end = hostport.indexOf("]");
    if (end < 0 || hostport[end + 1] !== ":") return undefined;
    return hostport.slice(1, end);
  }
  const i = hostport.lastIndexOf(":");
  if (i < 0 || hostport.indexOf(":") !== i) return undefined;
  return hostport.slice(0, i);
}

/** Ollama's `allowedHostsMiddleware` when listening on loopback. */
function hostVerdict(
  hostHeader: string,
  method: string,
): "allow" | "preflight" | "forbid" {
  const host = splitHostPort(hostHeader) ?? hostHeader;
  if (isLocalAddress(host)) return "allow";

  const lower = host.toLowerCase();
  const named = lower === "" || lower === "localhost" ||
    lower === systemHostname() ||
    [".localhost", ".local", ".internal"].some((tld) => lower.endsWith(tld));
  if (!named) return "forbid";
  return method === "OPTIONS" ? "preflight" : "allow";
}

// ---------------------------------------------------------------------------
// Interpreting one request.

interface SimState {
  options: Required<Omit<SimOptions, "failMidStreamAfter">> & {
    failMidStreamAfter?: number;
  };
  blobs: Set<string>;
  closing: AbortController;
  streams: Set<ReadableStreamDefaultController<Uint8Array>>;
}

interface Failure {
  status: number;
  message: string;
}

/** What a handler decided: the record's `acted`, and how to answer. */
interface Outcome {
  acted?: ActedOn;
  failure?: Failure;
  /** A complete answer that is not a generation. */
  respond?: () => Response;
  generation?: { dialect: StreamDialect; gen: Generation; stream: boolean };
}

const encoder = new TextEncoder();

function json(
  body: unknown,
  status = 200,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });
}

function str(value: GoValue | undefined): string {
  return typeof value === "string" ? value : "";
}

function record(value: GoValue | undefined): Record<string, GoValue> {
  return value && typeof value === "object" && !Array.isArray(value) &&
      !(value instanceof Map) && !("kind" in value)
    ? value as Record<string, GoValue>
    : {};
}

function list(value: GoValue | undefined): GoValue[] {
  return Array.isArray(value) ? value : [];
}

function pushText(texts: string[], text: unknown): void {
  if (typeof text === "string" && text !== "") texts.push(text);
}

function toolDescriptions(tools: GoValue | undefined, texts: string[]): void {
  for (const tool of list(tools)) {
    pushText(texts, record(record(tool).function).description);
  }
}

function capTokens(
  chunks: number,
  cap: number | undefined,
): { count: number; reason: Generation["doneReason"] } {
  if (cap === undefined || cap < 0 || cap > chunks) {
    return { count: chunks, reason: "stop" };
  }
  return { count: cap, reason: "length" };
}

function generation(
  state: SimState,
  init: {
    model: string;
    cap?: number;
    texts: string[];
    includeUsage?: boolean;
    context?: number[];
  },
): Generation {
  const { count, reason } = capTokens(state.options.chunks, init.cap);
  return {
    model: init.model,
    tokens: simulatedTokens(count),
    promptTokens: countPromptTokens(init.texts),
    doneReason: reason,
    includeUsage: init.includeUsage,
    context: init.context,
  };
}

/** Resolves `raw` for an inference route; a failure when not runnable. */
function resolveForInference(
  raw: string,
  state: SimState,
): { full?: string; source?: ModelSource; failure?: Failure } {
  const r = resolveModelRef(raw, { installed: state.options.models });
  if (!r.ok) return { failure: { status: r.status, message: r.error } };
  if (r.source !== "cloud" && !r.installed) {
    return {
      full: r.full,
      source: r.source,
      failure: { status: 404, message: `model '${raw}' not found` },
    };
  }
  return { full: r.full, source: r.source };
}

function bindFailure(result: GoDecodeResult): Failure | undefined {
  if (result.eof) return { status: 400, message: "missing request body" };
  if (result.error !== undefined) {
    return { status: 400, message: result.error };
  }
  return undefined;
}

function nativeInference(
  name: "generate" | "chat",
  body: Uint8Array,
  state: SimState,
): Outcome {
  const bound = bindJson(
    body,
    name === "generate" ? GENERATE_REQUEST : CHAT_REQUEST,
  );
  const failure = bindFailure(bound);
  if (failure && !bound.value) return { failure };
  const req = bound.value!;

  const texts: string[] = [];
  if (name === "generate") {
    for (const field of ["prompt", "system", "suffix", "template"]) {
      pushText(texts, req[field]);
    }
  } else {
    for (const m of list(req.messages)) pushText(texts, record(m).content);
    toolDescriptions(req.tools, texts);
  }
  const numPredict = intOption(req.options, "num_predict");
  const numCtx = intOption(req.options, "num_ctx");
  const acted: ActedOn = {
    models: [],
    stream: req.stream !== false,
    texts,
    numPredict: numPredict.value,
    numCtx: numCtx.value,
    keepAlive: req.keep_alive ?? undefined,
    context: name === "generate" && Array.isArray(req.context)
      ? req.context as number[]
      : undefined,
  };
  if (failure) return { acted, failure };

  const top = req.top_logprobs as number;
  if (top < 0 || top > 20) {
    return {
      acted,
      failure: {
        status: 400,
        message: "top_logprobs must be between 0 and 20",
      },
    };
  }
  const model = resolveForInference(str(req.model), state);
  if (model.full) acted.models.push(model.full);
  acted.source = model.source;
  acted.forwardedToCloud = model.source === "cloud" || undefined;
  if (model.failure) return { acted, failure: model.failure };

  const optionError = checkOptions(req.options);
  if (optionError) {
    return { acted, failure: { status: 500, message: optionError } };
  }

  // An empty request only loads (or, with keep_alive 0, unloads) the model.
  const empty = name === "generate"
    ? str(req.prompt) === ""
    : list(req.messages).length === 0;
  if (empty && model.source !== "cloud") {
    acted.texts = [];
    const unload = req.keep_alive === 0 || req.keep_alive === "0" ||
      req.keep_alive === "0s";
    return {
      acted,
      respond: () =>
        json({
          model: str(req.model),
          created_at: new Date().toISOString(),
          ...(name === "chat"
            ? { message: { role: "assistant", content: "" } }
            : { response: "" }),
          done: true,
          done_reason: unload ? "unload" : "load",
        }),
    };
  }

  return {
    acted,
    generation: {
      dialect: name,
      stream: acted.stream,
      gen: generation(state, {
        model: str(req.model),
        cap: numPredict.value,
        texts,
        context: acted.context,
      }),
    },
  };
}

function openaiChatTexts(req: Record<string, GoValue>): {
  texts: string[];
  error?: string;
} {
  const texts: string[] = [];
  for (const m of list(req.messages)) {
    const msg = record(m);
    const content = msg.content;
    if (typeof content === "string") {
      pushText(texts, content);
    } else if (Array.isArray(content)) {
      for (const part of content) {
        if (!(part instanceof Map)) {
          return { texts, error: "invalid message format" };
        }
        const type = part.get("type");
        if (type === "text") {
          const text = part.get("text");
          if (typeof text !== "string") {
            return { texts, error: "invalid message format" };
          }
          pushText(texts, text);
        } else if (type !== "image_url" && type !== "input_audio") {
          return { texts, error: "invalid message format" };
        }
      }
    } else if (msg.tool_calls === null || msg.tool_calls === undefined) {
      const goType = content === null
        ? "<nil>"
        : typeof content === "number"
        ? "float64"
        : typeof content === "boolean"
        ? "bool"
        : "map[string]interface {}";
      return { texts, error: `invalid message content type: ${goType}` };
    }
  }
  toolDescriptions(req.tools, texts);
  return { texts };
}

function responsesTexts(req: Record<string, GoValue>): {
  texts: string[];
  error?: string;
} {
  const texts: string[] = [];
  pushText(texts, req.instructions);
  const input = record(req.input);
  pushText(texts, input.text);
  for (const item of list(input.items)) {
    const it = record(item);
    if (it.type === "message") {
      let text = "";
      for (const part of list(it.content)) {
        const p = record(part);
        if (p.type === "input_text" || p.type === "output_text") {
          text += str(p.text);
        }
        if (p.type === "input_file") {
          return { texts, error: "file inputs are not currently supported" };
        }
      }
      pushText(texts, text);
    } else if (it.type === "function_call_output") {
      pushText(texts, it.output);
    }
  }
  for (const tool of list(req.tools)) pushText(texts, record(tool).description);
  return { texts };
}

function anthropicBlocksText(blocks: GoValue): string {
  let text = "";
  for (const block of list(blocks)) {
    if (block instanceof Map && block.get("type") === "text") {
      const t = block.get("text");
      if (typeof t === "string") text += t;
    }
  }
  return text;
}

function anthropicTexts(req: Record<string, GoValue>): {
  texts: string[];
  error?: string;
} {
  const texts: string[] = [];
  if (typeof req.system === "string") pushText(texts, req.system);
  else if (Array.isArray(req.system)) {
    pushText(texts, anthropicBlocksText(req.system));
  }

  for (const m of list(req.messages)) {
    const msg = record(m);
    const role = str(msg.role).toLowerCase();
    let text = "";
    const results: string[] = [];
    for (const b of list(msg.content)) {
      const block = record(b);
      switch (block.type) {
        case "text":
          text += str(block.text);
          break;
        case "image":
          if (block.source === null) {
            return { texts, error: "invalid image source" };
          }
          break;
        case "tool_use":
          if (str(block.id) === "") {
            return {
              texts,
              error: "tool_use block missing required 'id' field",
            };
          }
          if (str(block.name) === "") {
            return {
              texts,
              error: "tool_use block missing required 'name' field",
            };
          }
          break;
        case "tool_result": {
          const c = block.content;
          results.push(
            typeof c === "string"
              ? c
              : Array.isArray(c)
              ? anthropicBlocksText(c)
              : "",
          );
          break;
        }
      }
    }
    if (role === "user") { for (const r of results) pushText(texts, r); }
    pushText(texts, text);
  }
  for (const tool of list(req.tools)) pushText(texts, record(tool).description);
  return { texts };
}

/** The model named by the exact `model` key, as the cloud passthrough reads it. */
function passthroughModel(body: Uint8Array): string | undefined {
  try {
    const node = unmarshalWhole(body);
    if (node.kind !== "object") return undefined;
    let model: string | undefined;
    for (const [key, value] of node.members) {
      if (key !== "model") continue;
      model = value.kind === "string" ? value.value : undefined;
    }
    const trimmed = model === undefined ? "" : goTrimSpace(model);
    return trimmed === "" ? undefined : trimmed;
  } catch {
    return undefined;
  }
}

function v1Inference(
  name: RouteName,
  body: Uint8Array,
  state: SimState,
): Outcome {
  const types: Partial<Record<RouteName, GoType>> = {
    v1_chat: CHAT_COMPLETION_REQUEST,
    v1_completions: COMPLETION_REQUEST,
    v1_embeddings: OPENAI_EMBED_REQUEST,
    v1_responses: RESPONSES_REQUEST,
    v1_messages: MESSAGES_REQUEST,
  };
  const bound = bindJson(body, types[name]!);

  // Ollama's passthrough forwards explicit cloud models by the exact key.
  const exact = passthroughModel(body);
  const exactRef = exact === undefined ? undefined : parseModelRef(exact);
  const cloud = exactRef !== undefined && !("error" in exactRef) &&
    exactRef.source === "cloud";

  if (!bound.value || (bound.error !== undefined && !cloud)) {
    const failure = bound.eof
      ? { status: 400, message: "EOF" }
      : { status: 400, message: bound.error ?? "EOF" };
    return { failure };
  }
  const req = bound.value;

  let extracted: { texts: string[]; error?: string };
  let cap: number | undefined;
  const acted: ActedOn = { models: [], stream: false, texts: [] };
  switch (name) {
    case "v1_chat":
      extracted = openaiChatTexts(req);
      acted.maxTokens = req.max_tokens as number | undefined ?? undefined;
      acted.stream = req.stream === true;
      cap = acted.maxTokens;
      break;
    case "v1_completions":
      extracted = { texts: [] };
      pushText(extracted.texts, req.prompt);
      pushText(extracted.texts, req.suffix);
      acted.maxTokens = req.max_tokens as number | undefined ?? undefined;
      acted.stream = req.stream === true;
      cap = acted.maxTokens;
      break;
    case "v1_embeddings":
      extracted = embedInputTexts(req.input, "openai");
      break;
    case "v1_responses":
      extracted = responsesTexts(req);
      acted.maxOutputTokens = req.max_output_tokens as number | undefined ??
        undefined;
      acted.stream = req.stream === true;
      cap = acted.maxOutputTokens;
      break;
    default:
      extracted = anthropicTexts(req);
      acted.maxTokens = req.max_tokens as number;
      acted.stream = req.stream === true;
      cap = acted.maxTokens;
  }
  acted.texts = extracted.texts;

  let modelName = str(req.model);
  if (cloud) {
    modelName = exact!;
    const r = resolveModelRef(exact!, { installed: state.options.models });
    if (r.ok) acted.models.push(r.full);
    acted.source = "cloud";
    acted.forwardedToCloud = true;
  } else {
    if (extracted.error) {
      return { acted, failure: { status: 400, message: extracted.error } };
    }
    const model = resolveForInference(modelName, state);
    if (model.full) acted.models.push(model.full);
    acted.source = model.source;
    acted.forwardedToCloud = model.source === "cloud" || undefined;
    if (model.failure) return { acted, failure: model.failure };
  }

  if (name === "v1_embeddings") {
    return {
      acted,
      respond: () =>
        json({
          object: "list",
          data: acted.texts.map((_, i) => ({
            object: "embedding",
            embedding: embeddingVector(i),
            index: i,
          })),
          model: modelName,
          usage: {
            prompt_tokens: countPromptTokens(acted.texts),
            total_tokens: countPromptTokens(acted.texts),
          },
        }),
    };
  }

  const dialects: Partial<Record<RouteName, StreamDialect>> = {
    v1_chat: "openai_chat",
    v1_completions: "openai_completion",
    v1_responses: "responses",
    v1_messages: "anthropic",
  };
  const streamOptions = record(req.stream_options);
  return {
    acted,
    generation: {
      dialect: dialects[name]!,
      stream: acted.stream,
      gen: generation(state, {
        model: modelName,
        cap: state.options.ignoreMaxTokens && name !== "v1_responses"
          ? undefined
          : cap,
        texts: acted.texts,
        includeUsage: streamOptions.include_usage === true,
      }),
    },
  };
}

function embedInputTexts(
  input: GoValue | undefined,
  dialect: "native" | "openai",
): { texts: string[]; error?: string } {
  const texts: string[] = [];
  if (typeof input === "string") {
    if (dialect === "openai" && input === "") {
      return { texts, error: "invalid input" };
    }
    pushText(texts, input);
    return { texts };
  }
  if (Array.isArray(input)) {
    if (dialect === "openai" && input.length === 0) {
      return { texts, error: "invalid input" };
    }
    for (const v of input) {
      if (typeof v !== "string") return { texts, error: "invalid input type" };
      texts.push(v);
    }
    return { texts };
  }
  if (input === null || input === undefined) {
    return dialect === "openai" ? { texts, error: "invalid input" } : { texts };
  }
  return { texts, error: "invalid input type" };
}

function embeddingVector(seed: number): number[] {
  return Array.from(
    { length: 8 },
    (_, i) => Math.round(Math.sin(seed + i) * 1e6) / 1e6,
  );
}

function nativeEmbed(
  name: "embed" | "embeddings",
  body: Uint8Array,
  state: SimState,
): Outcome {
  const bound = bindJson(
    body,
    name === "embed" ? EMBED_REQUEST : EMBEDDING_REQUEST,
  );
  const failure = bindFailure(bound);
  if (failure && !bound.value) return { failure };
  const req = bound.value!;

  const extracted = name === "embed"
    ? embedInputTexts(req.input, "native")
    : { texts: str(req.prompt) === "" ? [] : [str(req.prompt)] };
  const acted: ActedOn = {
    models: [],
    stream: false,
    texts: extracted.texts,
    keepAlive: req.keep_alive ?? undefined,
    numCtx: intOption(req.options, "num_ctx").value,
  };
  if (failure) return { acted, failure };

  const model = resolveForInference(str(req.model), state);
  if (model.full) acted.models.push(model.full);
  acted.source = model.source;
  acted.forwardedToCloud = model.source === "cloud" || undefined;
  if (model.failure) return { acted, failure: model.failure };
  if (extracted.error) {
    return { acted, failure: { status: 400, message: extracted.error } };
  }

  return {
    acted,
    respond: () =>
      name === "embed"
        ? json({
          model: str(req.model),
          embeddings: acted.texts.map((_, i) => embeddingVector(i)),
          total_duration: 1_000_000,
          load_duration: 100_000,
          prompt_eval_count: countPromptTokens(acted.texts),
        })
        : json({ embedding: acted.texts.length ? embeddingVector(0) : [] }),
  };
}

/** Names for management routes: `model.ParseName`, no source suffix. */
function plainName(raw: string): string | undefined {
  const name = parseModelName(raw);
  return isValidModelName(name) ? formatModelName(name) : undefined;
}

function installedIndex(full: string, state: SimState): number {
  return state.options.models.findIndex((m) =>
    formatModelName(parseModelName(m)).toLowerCase() === full.toLowerCase()
  );
}

function progress(
  statuses: readonly Record<string, unknown>[],
  stream: boolean,
): Outcome["respond"] {
  return () => {
    if (!stream) return json(statuses[statuses.length - 1]);
    const text = statuses.map((s) => JSON.stringify(s) + "\n").join("");
    return new Response(text, {
      headers: { "content-type": "application/x-ndjson" },
    });
  };
}

function shortName(full: string): string {
  const prefix = "registry.ollama.ai/library/";
  return full.startsWith(prefix) ? full.slice(prefix.length) : full;
}

function manage(
  name: RouteName,
  body: Uint8Array,
  state: SimState,
): Outcome {
  const types: Partial<Record<RouteName, GoType>> = {
    show: SHOW_REQUEST,
    pull: PULL_REQUEST,
    push: PULL_REQUEST,
    create: CREATE_REQUEST,
    copy: COPY_REQUEST,
    delete: DELETE_REQUEST,
  };
  const bound = bindJson(body, types[name]!);
  const failure = bindFailure(bound);
  if (failure && !bound.value) return { failure };
  const req = bound.value!;
  const acted: ActedOn = {
    models: [],
    stream: ["pull", "push", "create"].includes(name) && req.stream !== false,
    texts: [],
  };
  if (name === "create") {
    pushText(acted.texts, req.system);
    pushText(acted.texts, req.template);
    for (const m of list(req.messages)) {
      pushText(acted.texts, record(m).content);
    }
  }
  if (failure) return { acted, failure };
  const ref = str(req.model) || str(req.name);

  switch (name) {
    case "show": {
      const model = resolveForInference(ref, state);
      if (model.full) acted.models.push(model.full);
      acted.source = model.source;
      if (model.failure) return { acted, failure: model.failure };
      return { acted, respond: () => json(showBody(model.full!)) };
    }
    case "pull":
    case "push": {
      const parsed = parseModelRef(ref);
      if ("error" in parsed) {
        return { acted, failure: { status: 400, message: parsed.error } };
      }
      const base = parsed.source === "cloud"
        ? parsed.base +
          (parsed.base.lastIndexOf(":") > parsed.base.lastIndexOf("/")
            ? "-cloud"
            : ":cloud")
        : parsed.base;
      const full = plainName(base);
      if (!full) {
        return {
          acted,
          failure: { status: 400, message: "invalid model name" },
        };
      }
      acted.models.push(full);
      acted.source = parsed.source;
      if (name === "push" && installedIndex(full, state) < 0) {
        return {
          acted,
          failure: { status: 404, message: `model '${ref}' not found` },
        };
      }
      if (name === "pull" && installedIndex(full, state) < 0) {
        state.options.models.push(shortName(full));
      }
      const digest = "sha256:" + "ab".repeat(32);
      const steps = name === "pull"
        ? [
          { status: "pulling manifest" },
          {
            status: `pulling ${digest.slice(7, 19)}`,
            digest,
            total: 1000,
            completed: 0,
          },
          {
            status: `pulling ${digest.slice(7, 19)}`,
            digest,
            total: 1000,
            completed: 1000,
          },
          { status: "verifying sha256 digest" },
          { status: "writing manifest" },
          { status: "success" },
        ]
        : [
          { status: "retrieving manifest" },
          { status: "pushing manifest" },
          { status: "success" },
        ];
      return { acted, respond: progress(steps, acted.stream) };
    }
    case "create": {
      const full = plainName(ref);
      if (!full) {
        return {
          acted,
          failure: { status: 400, message: "invalid model name" },
        };
      }
      acted.models.push(full);
      if (str(req.from) !== "") {
        const from = resolveModelRef(str(req.from), {
          installed: state.options.models,
        });
        if (!from.ok) {
          return {
            acted,
            failure: { status: from.status, message: from.error },
          };
        }
        acted.models.push(from.full);
        acted.source = from.source;
      }
      if (installedIndex(full, state) < 0) {
        state.options.models.push(shortName(full));
      }
      return {
        acted,
        respond: progress([
          { status: "using existing layer" },
          { status: "writing manifest" },
          { status: "success" },
        ], acted.stream),
      };
    }
    case "copy": {
      const src = plainName(str(req.source));
      if (!src) {
        return {
          acted,
          failure: {
            status: 400,
            message: `source "${str(req.source)}" is invalid`,
          },
        };
      }
      acted.models.push(src);
      const dst = plainName(str(req.destination));
      if (!dst) {
        return {
          acted,
          failure: {
            status: 400,
            message: `destination "${str(req.destination)}" is invalid`,
          },
        };
      }
      acted.models.push(dst);
      if (installedIndex(src, state) < 0) {
        return {
          acted,
          failure: {
            status: 404,
            message: `model "${str(req.source)}" not found`,
          },
        };
      }
      if (installedIndex(dst, state) < 0) {
        state.options.models.push(shortName(dst));
      }
      return { acted, respond: () => new Response(null, { status: 200 }) };
    }
    default: { // delete
      const full = plainName(ref);
      if (!full) {
        return {
          acted,
          failure: { status: 400, message: `name "${ref}" is invalid` },
        };
      }
      acted.models.push(full);
      const i = installedIndex(full, state);
      if (i < 0) {
        return {
          acted,
          failure: { status: 404, message: `model '${ref}' not found` },
        };
      }
      state.options.models.splice(i, 1);
      return { acted, respond: () => new Response(null, { status: 200 }) };
    }
  }
}

function modelDetails(name: string): Record<string, unknown> {
  const family = name.split("/").pop()!.split(/[.:0-9-]/)[0] || "llama";
  return {
    parent_model: "",
    format: "gguf",
    family,
    families: [family],
    parameter_size: "3.2B",
    quantization_level: "Q4_K_M",
  };
}

function digestOf(name: string): string {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return h.toString(16).padStart(8, "0").repeat(8);
}

function showBody(full: string): Record<string, unknown> {
  return {
    modelfile: `# Modelfile generated by "ollama show"\nFROM ${
      shortName(full)
    }\n`,
    parameters: 'stop                           "<|eot_id|>"',
    template: "{{ .Prompt }}",
    details: modelDetails(full),
    model_info: {
      "general.architecture": "llama",
      "general.parameter_count": 3212749888,
    },
    capabilities: ["completion", "tools"],
    modified_at: "2026-01-01T00:00:00Z",
  };
}

function tagsBody(state: SimState): Record<string, unknown> {
  return {
    models: state.options.models.map((m) => ({
      name: m,
      model: m,
      modified_at: "2026-01-01T00:00:00Z",
      size: 2019393189,
      digest: digestOf(m),
      details: modelDetails(m),
    })),
  };
}

async function multipartModel(
  request: Request,
  body: Uint8Array,
  query: string,
): Promise<{ model?: string; error?: string }> {
  const type = request.headers.get("content-type") ?? "";
  if (!/^multipart\/form-data/i.test(type)) {
    return {
      error:
        "failed to parse multipart form: request Content-Type isn't multipart/form-data",
    };
  }
  try {
    const form = await new Response(body as Uint8Array<ArrayBuffer>, {
      headers: { "content-type": type },
    })
      .formData();
    const field = form.get("model");
    const model = typeof field === "string" && field !== ""
      ? field
      : new URLSearchParams(query).get("model") ?? "";
    if (model === "") return { error: "model is required" };
    if (!(form.get("file") instanceof File)) {
      return { model, error: "file is required: http: no such file" };
    }
    return { model };
  } catch (e) {
    return { error: `failed to parse multipart form: ${(e as Error).message}` };
  }
}

// ---------------------------------------------------------------------------
// Writing answers.

function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  if (ms <= 0 || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}

function streamResponse(
  frames: readonly Frame[],
  dialect: StreamDialect,
  state: SimState,
  rec: SimRecord,
): Response {
  let cancelled = false;
  let ctrl: ReadableStreamDefaultController<Uint8Array>;
  const fail = state.options.failMidStreamAfter;

  async function run() {
    let paced = 0;
    try {
      for (const frame of frames) {
        if (frame.paced) {
          if (fail !== undefined && paced >= fail) {
            ctrl.enqueue(
              encoder.encode(
                errorFrame(
                  dialect,
                  "an error was encountered while running the model",
                ),
              ),
            );
            break;
          }
          await abortableDelay(
            state.options.chunkDelayMs,
            state.closing.signal,
          );
          paced++;
        }
        if (cancelled || state.closing.signal.aborted) return;
        ctrl.enqueue(encoder.encode(frame.data));
      }
      ctrl.close();
    } catch {
      // the client went away while writing
    } finally {
      state.streams.delete(ctrl);
    }
  }

  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      ctrl = controller;
      state.streams.add(controller);
      void run();
    },
    cancel() {
      cancelled = true;
      rec.cancelled = true;
      state.streams.delete(ctrl);
    },
  });
  return new Response(body, {
    headers: {
      "content-type": streamContentType(dialect),
      ...(dialect === "generate" || dialect === "chat"
        ? {}
        : { "cache-control": "no-cache" }),
    },
  });
}

function errorDialect(name: RouteName): ErrorDialect {
  if (name === "v1_messages") return "anthropic";
  return name.startsWith("v1_") ? "openai" : "native";
}

function isInference(name: RouteName): boolean {
  return [
    "generate",
    "chat",
    "embed",
    "embeddings",
    "v1_chat",
    "v1_completions",
    "v1_embeddings",
    "v1_responses",
    "v1_messages",
    "v1_transcriptions",
  ].includes(name);
}

async function interpret(
  name: RouteName,
  params: Record<string, string>,
  request: Request,
  body: Uint8Array,
  state: SimState,
  query: string,
): Promise<Outcome> {
  const empty: ActedOn = { models: [], stream: false, texts: [] };
  switch (name) {
    case "root":
      return {
        acted: empty,
        respond: () =>
          new Response("Ollama is running", {
            headers: { "content-type": "text/plain; charset=utf-8" },
          }),
      };
    case "version":
      return {
        acted: empty,
        respond: () => json({ version: state.options.version }),
      };
    case "status":
      return {
        acted: empty,
        respond: () => json({ cloud: { disabled: false, source: "default" } }),
      };
    case "tags":
      return { acted: empty, respond: () => json(tagsBody(state)) };
    case "v1_models":
      return {
        acted: empty,
        respond: () =>
          json({
            object: "list",
            data: state.options.models.map((m) => ({
              id: m,
              object: "model",
              created: 1767225600,
              owned_by: "library",
            })),
          }),
      };
    case "ps":
      return {
        acted: empty,
        respond: () =>
          json({
            models: state.options.models.filter((m) => !m.endsWith("-cloud"))
              .slice(0, 2).map((m) => ({
                name: m,
                model: m,
                size: 3338801804,
                digest: digestOf(m),
                details: modelDetails(m),
                expires_at: new Date(Date.now() + 300_000).toISOString(),
                size_vram: 3338801804,
                context_length: 4096,
              })),
          }),
      };
    case "v1_model": {
      const raw = params.model;
      const acted: ActedOn = { models: [], stream: false, texts: [] };
      const model = resolveForInference(raw, state);
      if (model.full) acted.models.push(model.full);
      acted.source = model.source;
      acted.forwardedToCloud = model.source === "cloud" || undefined;
      if (model.failure) return { acted, failure: model.failure };
      return {
        acted,
        respond: () =>
          json({
            id: raw,
            object: "model",
            created: 1767225600,
            owned_by: "library",
          }),
      };
    }
    case "generate":
    case "chat":
      return nativeInference(name, body, state);
    case "embed":
    case "embeddings":
      return nativeEmbed(name, body, state);
    case "v1_chat":
    case "v1_completions":
    case "v1_embeddings":
    case "v1_responses":
    case "v1_messages":
      return v1Inference(name, body, state);
    case "v1_transcriptions": {
      const form = await multipartModel(request, body, query);
      if (form.model === undefined) {
        return { failure: { status: 400, message: form.error! } };
      }
      const acted: ActedOn = { models: [], stream: false, texts: [] };
      const model = resolveForInference(form.model, state);
      if (model.full) acted.models.push(model.full);
      acted.source = model.source;
      if (form.error) {
        return { acted, failure: { status: 400, message: form.error } };
      }
      if (model.failure) return { acted, failure: model.failure };
      return {
        acted,
        respond: () =>
          json({ text: simulatedTokens(state.options.chunks).join("") }),
      };
    }
    case "show":
    case "pull":
    case "push":
    case "create":
    case "copy":
    case "delete":
      return manage(name, body, state);
    case "blob_upload": {
      const digest = params.digest;
      if (!/^sha256[:-][0-9a-fA-F]{64}$/.test(digest)) {
        return {
          acted: empty,
          failure: { status: 400, message: "invalid digest format" },
        };
      }
      const hash = new Uint8Array(
        await crypto.subtle.digest("SHA-256", body as Uint8Array<ArrayBuffer>),
      );
      const actual = "sha256:" +
        [...hash].map((b) => b.toString(16).padStart(2, "0")).join("");
      if (actual !== digest) {
        return {
          acted: empty,
          failure: {
            status: 400,
            message: `digest mismatch, expected "${digest}", got "${actual}"`,
          },
        };
      }
      const known = state.blobs.has(digest);
      state.blobs.add(digest);
      return {
        acted: empty,
        respond: () => new Response(null, { status: known ? 200 : 201 }),
      };
    }
    case "blob_head":
      if (!state.blobs.has(params.digest)) {
        return {
          acted: empty,
          failure: {
            status: 404,
            message: `blob "${params.digest}" not found`,
          },
        };
      }
      return {
        acted: empty,
        respond: () => new Response(null, { status: 200 }),
      };
    case "me":
      return {
        acted: empty,
        respond: () =>
          json({
            error: "unauthorized",
            signin_url: "https://ollama.com/connect?name=sim&key=c2lt",
          }, 401),
      };
    case "signout":
    case "user_keys":
      return { acted: empty, respond: () => json(null) };
    case "web_search":
    case "web_fetch": {
      const bound = bindJson(body, WEB_REQUEST);
      const failure = bindFailure(bound);
      if (failure) return { failure };
      const req = bound.value!;
      return {
        acted: empty,
        respond: () =>
          name === "web_search"
            ? json({
              results: [{
                title: "Simulated result",
                url: "https://example.invalid/",
                content: `About ${str(req.query)}`,
              }],
            })
            : json({
              title: "Simulated page",
              content: "Simulated content",
              links: [],
            }),
      };
    }
    case "recommendations":
      return {
        acted: empty,
        respond: () =>
          json({
            recommendations: [
              {
                model: "llama3.2:latest",
                description: "A small general model",
              },
              {
                model: "gpt-oss:120b-cloud",
                description: "A large cloud model",
              },
            ],
          }),
      };
  }
}

function decompressIfZstd(
  name: RouteName,
  request: Request,
  body: Uint8Array,
): { body: Uint8Array; error?: string } {
  if (!CLOUD_PASSTHROUGH.has(name)) return { body };
  if (request.headers.get("content-encoding") !== "zstd") return { body };
  try {
    const out = zstdDecompressSync(body);
    if (out.byteLength > 20 << 20) {
      return { body, error: "http: request body too large" };
    }
    return { body: new Uint8Array(out) };
  } catch {
    return { body, error: "failed to decompress request body" };
  }
}

async function handle(
  request: Request,
  state: SimState,
  records: SimRecord[],
): Promise<Response> {
  const { path, query } = splitTarget(request.url);
  const rawBody = new Uint8Array(
    await request.arrayBuffer().catch(() => new ArrayBuffer(0)),
  );
  const rec: SimRecord = {
    method: request.method,
    path,
    query,
    headers: Object.fromEntries(request.headers),
    rawBody,
    cancelled: false,
  };
  records.push(rec);

  // 1. Route on the decoded path, as gin does (Go unescapes the path first).
  const decoded = goUnescapePath(path);
  if (decoded === undefined) {
    rec.error = "invalid URL escape";
    return new Response("400 Bad Request", { status: 400 });
  }
  const outcome = findRoute(request.method, decoded);
  if (outcome.kind === "redirect") {
    // gin redirects before running any middleware.
    const code = request.method === "GET" ? 301 : 307;
    const location = outcome.location + query;
    rec.error = `redirect to ${location}`;
    const html = request.method === "GET" || request.method === "HEAD"
      ? `<a href="${location}">Moved Permanently</a>.\n\n`
      : null;
    return new Response(html, {
      status: code,
      headers: {
        location,
        ...(html ? { "content-type": "text/html; charset=utf-8" } : {}),
      },
    });
  }

  // 2. CORS (gin-contrib/cors with Ollama's default origins).
  const host = request.headers.get("host") ?? "";
  const origin = request.headers.get("origin") ?? "";
  const corsHeaders: Record<string, string> = {};
  if (
    origin !== "" && origin !== `http://${host}` && origin !== `https://${host}`
  ) {
    if (!originAllowed(origin, state.options.origins)) {
      rec.error = `origin ${origin} not allowed`;
      return new Response(null, { status: 403 });
    }
    corsHeaders["access-control-allow-origin"] = origin;
    corsHeaders["vary"] = "Origin";
    if (request.method === "OPTIONS") {
      rec.error = "preflight";
      return new Response(null, {
        status: 204,
        headers: {
          ...corsHeaders,
          "access-control-allow-methods":
            "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS",
          "access-control-max-age": "43200",
        },
      });
    }
  }

  // 3. Loopback Host check.
  const verdict = hostVerdict(host, request.method);
  if (verdict === "forbid") {
    rec.error = `host ${host} not allowed`;
    return new Response(null, { status: 403, headers: corsHeaders });
  }
  if (verdict === "preflight") {
    rec.error = "preflight";
    return new Response(null, { status: 204, headers: corsHeaders });
  }

  if (outcome.kind === "not_allowed") {
    rec.error = "405 method not allowed";
    return new Response("405 method not allowed", {
      status: 405,
      headers: { "content-type": "text/plain", ...corsHeaders },
    });
  }
  if (outcome.kind === "not_found") {
    rec.error = "404 page not found";
    return new Response("404 page not found", {
      status: 404,
      headers: { "content-type": "text/plain", ...corsHeaders },
    });
  }

  // 4. Read the body as Ollama would and decide what it acts on.
  const { name, params } = outcome;
  const unpacked = decompressIfZstd(name, request, rawBody);
  const dialect = errorDialect(name);
  if (unpacked.error) {
    rec.error = unpacked.error;
    return json({ error: unpacked.error }, 400, corsHeaders);
  }
  const result = await interpret(
    name,
    params,
    request,
    unpacked.body,
    state,
    query,
  );
  rec.acted = result.acted;

  // 5. Model loading.
  if (isInference(name) && state.options.headerDelayMs > 0) {
    const gone = () => (rec.cancelled = true);
    request.signal.addEventListener("abort", gone, { once: true });
    await abortableDelay(state.options.headerDelayMs, state.closing.signal);
    request.signal.removeEventListener("abort", gone);
  }

  // 6. Answer.
  if (result.failure) {
    rec.error = result.failure.message;
    return json(
      errorBody(dialect, result.failure),
      result.failure.status,
      corsHeaders,
    );
  }
  if (result.respond) {
    const response = result.respond();
    for (const [k, v] of Object.entries(corsHeaders)) {
      response.headers.set(k, v);
    }
    return response;
  }
  const { dialect: streamDialect, gen, stream } = result.generation!;
  if (!stream) return json(singleBody(streamDialect, gen), 200, corsHeaders);
  const response = streamResponse(
    streamFrames(streamDialect, gen),
    streamDialect,
    state,
    rec,
  );
  for (const [k, v] of Object.entries(corsHeaders)) response.headers.set(k, v);
  return response;
}

/**
 * Starts the simulator on a real socket.
 *
 * @example
 * ```ts
 * const sim = await startOllamaSim({ chunks: 3, chunkDelayMs: 5 });
 * const res = await fetch(`${sim.url}/api/generate`, {
 *   method: "POST",
 *   body: JSON.stringify({ model: "llama3.2", prompt: "hi" }),
 * });
 * await res.text();
 * await sim.close();
 * ```
 */
export async function startOllamaSim(
  options: SimOptions = {},
): Promise<OllamaSim> {
  const state: SimState = {
    options: {
      port: options.port ?? 0,
      hostname: options.hostname ?? "127.0.0.1",
      models: [...(options.models ?? DEFAULT_MODELS)],
      chunkDelayMs: options.chunkDelayMs ?? 20,
      chunks: options.chunks ?? 5,
      headerDelayMs: options.headerDelayMs ?? 0,
      version: options.version ?? "0.13.0",
      failMidStreamAfter: options.failMidStreamAfter,
      origins: [...(options.origins ?? [])],
      ignoreMaxTokens: options.ignoreMaxTokens ?? false,
    },
    blobs: new Set(),
    closing: new AbortController(),
    streams: new Set(),
  };
  const records: SimRecord[] = [];

  const { promise: listening, resolve } = Promise.withResolvers<number>();
  const server = Deno.serve({
    port: state.options.port,
    hostname: state.options.hostname,
    signal: state.closing.signal,
    onListen: (addr) => resolve(addr.port),
  }, (request) => handle(request, state, records));
  const port = await listening;

  return {
    url: `http://${state.options.hostname}:${port}`,
    port,
    records,
    clear() {
      records.length = 0;
    },
    set(changes) {
      const { models, origins, ...rest } = changes;
      Object.assign(state.options, rest);
      if (models) state.options.models = [...models];
      if (origins) state.options.origins = [...origins];
    },
    async close() {
      for (const controller of state.streams) {
        try {
          controller.error(new Error("simulator closed"));
        } catch {
          // already closed
        }
      }
      state.streams.clear();
      state.closing.abort();
      await server.finished;
    },
  };
}
