/**
 * The table of Ollama routes Butler forwards, matched byte for byte on the
 * method and the raw request path. Anything not in the table is a 404 and is
 * never forwarded: Ollama's router would otherwise redirect trailing slashes
 * and Butler must decide on exactly the path Ollama acts on.
 *
 * @module
 */

import type { Dialect } from "../errors/refusal.ts";

/** What a route does, which decides the checks it needs. */
export type RouteKind =
  | "liveness" // GET/HEAD /
  | "version"
  | "status"
  | "list_models" // /api/tags, /v1/models: response filtered
  | "list_running" // /api/ps: response filtered
  | "show" // POST /api/show
  | "model_detail" // GET /v1/models/:model
  | "generate" // inference that produces tokens
  | "embed"
  | "transcribe" // multipart
  | "manage" // pull, push, create, copy, delete, blobs
  | "account" // ollama.com account routes
  | "experimental"; // internet-reaching routes

/** Where the generation cap lives in a request body. */
export type CapField =
  | "options.num_predict"
  | "max_tokens"
  | "max_output_tokens";

export interface Route {
  readonly method: string;
  /** The pattern: literal segments, `:name` for one non-empty segment. */
  readonly pattern: string;
  /** Stable label for logs and metrics (the pattern). */
  readonly label: string;
  readonly kind: RouteKind;
  readonly dialect: Dialect;
  /** JSON fields that name a model (resolved with Ollama's rules). */
  readonly modelFields: readonly ModelField[];
  /** The body must be read and parsed before forwarding. */
  readonly readsBody: boolean;
  /** Which field caps generation, for routes that generate. */
  readonly capField?: CapField;
  /** The route streams by default when `stream` is absent. */
  readonly streamsByDefault: boolean;
  /**
   * Ollama decompresses `Content-Encoding: zstd` on this route before reading
   * the body (all `POST /v1/*`).
   */
  readonly acceptsZstd: boolean;
}

/** One model reference in a request. */
export interface ModelField {
  /** Where: a JSON field, a path parameter, or the multipart form. */
  readonly from: "json" | "path" | "form";
  /** JSON field (or path parameter) name. */
  readonly name: string;
  /** When this field is empty, Ollama falls back to that field. */
  readonly fallback?: string;
  /** The reference is required: absent or empty is refused. */
  readonly required: boolean;
  /** Writing to this model (destination of copy/create): for logs only. */
  readonly writes?: boolean;
}

const MODEL: ModelField = { from: "json", name: "model", required: true };
const MODEL_OR_NAME: ModelField = {
  from: "json",
  name: "model",
  fallback: "name",
  required: true,
};

function route(
  method: string,
  pattern: string,
  kind: RouteKind,
  extra: Partial<Omit<Route, "method" | "pattern" | "kind" | "label">> = {},
): Route {
  const isV1Post = method === "POST" && pattern.startsWith("/v1/");
  return Object.freeze({
    method,
    pattern,
    label: pattern,
    kind,
    dialect: extra.dialect ??
      (pattern.startsWith("/v1/") ? "openai" : "native"),
    modelFields: extra.modelFields ?? [],
    readsBody: extra.readsBody ?? (extra.modelFields?.length ?? 0) > 0,
    capField: extra.capField,
    streamsByDefault: extra.streamsByDefault ?? false,
    acceptsZstd: extra.acceptsZstd ?? isV1Post,
  });
}

/** Every route Butler forwards (see `shared/ollama-api.md` §3). */
export const ROUTES: readonly Route[] = Object.freeze([
  route("GET", "/", "liveness"),
  route("HEAD", "/", "liveness"),
  route("GET", "/api/version", "version"),
  route("HEAD", "/api/version", "version"),
  route("GET", "/api/status", "status"),
  route("GET", "/api/tags", "list_models"),
  route("HEAD", "/api/tags", "list_models"),
  route("GET", "/v1/models", "list_models"),
  route("GET", "/api/ps", "list_running"),
  route("POST", "/api/show", "show", { modelFields: [MODEL_OR_NAME] }),
  route("GET", "/v1/models/:model", "model_detail", {
    modelFields: [{ from: "path", name: "model", required: true }],
    readsBody: false,
  }),
  route("POST", "/api/generate", "generate", {
    modelFields: [MODEL],
    capField: "options.num_predict",
    streamsByDefault: true,
  }),
  route("POST", "/api/chat", "generate", {
    modelFields: [MODEL],
    capField: "options.num_predict",
    streamsByDefault: true,
  }),
  route("POST", "/api/embed", "embed", { modelFields: [MODEL] }),
  route("POST", "/api/embeddings", "embed", { modelFields: [MODEL] }),
  route("POST", "/v1/chat/completions", "generate", {
    modelFields: [MODEL],
    capField: "max_tokens",
  }),
  route("POST", "/v1/completions", "generate", {
    modelFields: [MODEL],
    capField: "max_tokens",
  }),
  route("POST", "/v1/embeddings", "embed", { modelFields: [MODEL] }),
  route("POST", "/v1/responses", "generate", {
    modelFields: [MODEL],
    capField: "max_output_tokens",
  }),
  route("POST", "/v1/audio/transcriptions", "transcribe", {
    modelFields: [{ from: "form", name: "model", required: true }],
  }),
  route("POST", "/v1/messages", "generate", {
    modelFields: [MODEL],
    capField: "max_tokens",
    dialect: "anthropic",
  }),
  route("POST", "/api/pull", "manage", {
    modelFields: [MODEL_OR_NAME],
    streamsByDefault: true,
  }),
  route("POST", "/api/push", "manage", {
    modelFields: [MODEL_OR_NAME],
    streamsByDefault: true,
  }),
  route("POST", "/api/create", "manage", {
    modelFields: [
      { ...MODEL_OR_NAME, writes: true },
      { from: "json", name: "from", required: false },
    ],
    streamsByDefault: true,
  }),
  route("POST", "/api/copy", "manage", {
    modelFields: [
      { from: "json", name: "source", required: true },
      { from: "json", name: "destination", required: true, writes: true },
    ],
  }),
  route("DELETE", "/api/delete", "manage", { modelFields: [MODEL_OR_NAME] }),
  route("POST", "/api/blobs/:digest", "manage"),
  route("HEAD", "/api/blobs/:digest", "manage"),
  route("POST", "/api/me", "account"),
  route("POST", "/api/signout", "account"),
  route("DELETE", "/api/user/keys/:key", "account"),
  route("POST", "/api/experimental/web_search", "experimental"),
  route("POST", "/api/experimental/web_fetch", "experimental"),
  route("GET", "/api/experimental/model-recommendations", "experimental"),
]);

/** A matched route with its path parameters. */
export interface RouteMatch {
  readonly route: Route;
  readonly params: Readonly<Record<string, string>>;
  /** The raw path as received (no query). */
  readonly path: string;
  /** The raw query including `?`, or "". */
  readonly query: string;
}

// Each route's pattern split into segments once, not on every request.
const PATTERN_SEGMENTS: readonly (readonly string[])[] = ROUTES.map((route) =>
  route.pattern.split("/")
);

// A path parameter: one segment of characters that need no escaping and
// cannot form a dot segment. Anything else (`%`, `\`, empty) is a 404.
const PARAM = /^[A-Za-z0-9_][A-Za-z0-9_.:@+-]*$/;

/**
 * Splits the raw request target out of `request.url` without normalizing it
 * (Deno keeps the target as sent, `..` and `%`-escapes included).
 */
export function rawTarget(url: string): { path: string; query: string } {
  const schemeEnd = url.indexOf("://");
  const pathStart = schemeEnd < 0 ? 0 : url.indexOf("/", schemeEnd + 3);
  const target = pathStart < 0 ? "/" : url.slice(pathStart);
  const q = target.indexOf("?");
  return q < 0
    ? { path: target, query: "" }
    : { path: target.slice(0, q), query: target.slice(q) };
}

/**
 * Finds the route for `method` and the raw `url`, or `undefined` when the
 * path is not byte for byte one of the table's.
 */
export function matchRoute(
  method: string,
  url: string,
): RouteMatch | undefined {
  const { path, query } = rawTarget(url);
  if (path.includes("#")) return undefined;
  const segments = path.split("/");

  for (let r = 0; r < ROUTES.length; r++) {
    const candidate = ROUTES[r];
    if (candidate.method !== method) continue;
    const parts = PATTERN_SEGMENTS[r];
    if (parts.length !== segments.length) continue;
    const params: Record<string, string> = {};
    let ok = true;
    for (let i = 0; i < parts.length && ok; i++) {
      const part = parts[i];
      if (part.startsWith(":")) {
        ok = PARAM.test(segments[i]);
        params[part.slice(1)] = segments[i];
      } else {
        ok = part === segments[i];
      }
    }
    if (ok) return { route: candidate, params, path, query };
  }
  return undefined;
}
