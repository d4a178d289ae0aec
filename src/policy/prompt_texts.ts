/**
 * Every text in a request body that reaches the model, per route, found the
 * way Ollama reads the body (`api/types.go`, `openai/`, `anthropic/` in
 * Ollama's source): struct fields with Go's case-insensitive key rules,
 * free-form maps (`map[string]any`) with exact keys.
 *
 * The list errs on the side of more text: a prompt pattern tested against
 * text the model never sees can only refuse more. Where Ollama joins parts
 * into one message without a separator (`/v1/responses` content parts,
 * `/v1/messages` text blocks), the joined text is listed as well as each
 * part, so a word split across parts is still seen whole. Texts are raw;
 * run them through `normalizeForFilter` before matching.
 *
 * @module
 */

import { type JsonNode, parseJsonAsGo } from "../request/go_json.ts";
import {
  FieldTypeError,
  getArray,
  getField,
  getMapEntry,
  getString,
} from "../request/go_fields.ts";

type Collect = (body: JsonNode, out: string[]) => void;

const COLLECTORS: ReadonlyMap<string, Collect> = new Map<string, Collect>([
  ["/api/generate", generateTexts],
  ["/api/chat", chatTexts],
  ["/api/embed", embedTexts],
  ["/api/embeddings", embeddingsTexts],
  ["/api/create", createTexts],
  ["/v1/chat/completions", openaiChatTexts],
  ["/v1/completions", openaiCompletionTexts],
  ["/v1/embeddings", embedTexts],
  ["/v1/responses", responsesTexts],
  ["/v1/messages", anthropicTexts],
]);

/**
 * Every non-empty text in `body` that reaches the model on the route with
 * pattern `routePattern` (as in `src/routes/table.ts`, e.g. `/api/chat`).
 * Routes that put no request text in front of a model give `[]`.
 *
 * Covered: prompts, system texts and templates; message contents of every
 * role (tool results included) and their thinking, tool-call names and
 * arguments, tool names and call ids; unusual role names (some templates
 * print the role); every string and key of tool definitions (templates
 * print tools as JSON). Images, audio and files are not text and are left
 * out. `/v1/audio/transcriptions` is multipart and not handled here.
 *
 * Throws `FieldTypeError` where a text field holds a type Ollama would
 * refuse or that Butler cannot read as text, and `FieldConflictError` (from
 * the field lookup) where keys for one field disagree.
 *
 * @example
 * ```ts
 * const body = parseJsonAsGo(new TextEncoder().encode(
 *   '{"model":"m","meſſages":[{"role":"user","content":"hi"}]}',
 * ));
 * promptTexts("/api/chat", body); // ["hi"]
 * ```
 */
export function promptTexts(routePattern: string, body: JsonNode): string[] {
  const collect = COLLECTORS.get(routePattern);
  if (collect === undefined) return [];

  const out: string[] = [];
  collect(body, out);
  return out.filter((text) => text !== "");
}

/**
 * True when a native `/api/generate` body carries a non-empty `context`:
 * token ids of an earlier exchange, text no pattern can read. Other routes
 * have no such field (Ollama refuses token-id arrays as embedding input).
 */
export function hasOpaqueContext(
  routePattern: string,
  body: JsonNode,
): boolean {
  if (routePattern !== "/api/generate") return false;
  return (getArray(body, "context")?.length ?? 0) > 0;
}

// ---- native routes ---------------------------------------------------------

function generateTexts(body: JsonNode, out: string[]): void {
  for (const name of ["prompt", "system", "suffix", "template"]) {
    pushText(out, getString(body, name));
  }
}

function chatTexts(body: JsonNode, out: string[]): void {
  nativeMessages(body, out);
  collectEverything(getField(body, "tools"), out);
}

function createTexts(body: JsonNode, out: string[]): void {
  pushText(out, getString(body, "system"));
  pushText(out, getString(body, "template"));
  nativeMessages(body, out);
}

function embeddingsTexts(body: JsonNode, out: string[]): void {
  pushText(out, getString(body, "prompt"));
}

/** `input` of `/api/embed` and `/v1/embeddings`: a string or strings. */
function embedTexts(body: JsonNode, out: string[]): void {
  const input = getField(body, "input");
  if (input === undefined || input.kind === "null") return;
  if (input.kind === "string") {
    out.push(input.value);
    return;
  }
  if (input.kind !== "array") {
    throw new FieldTypeError("input", "string or array of strings", input);
  }
  input.items.forEach((item, index) => {
    if (item.kind !== "string") {
      throw new FieldTypeError(`input[${index}]`, "string", item);
    }
    out.push(item.value);
  });
}

/** `messages` as `api.Message` (native chat and create). */
function nativeMessages(body: JsonNode, out: string[]): void {
  const messages = getArray(body, "messages") ?? [];
  messages.forEach((message, index) => {
    if (message.kind === "null") return;
    const path = `messages[${index}]`;

    pushRole(out, getString(message, "role", path));
    pushText(out, getString(message, "content", path));
    pushText(out, getString(message, "thinking", path));
    pushText(out, getString(message, "tool_name", path));
    pushText(out, getString(message, "tool_call_id", path));

    const calls = getArray(message, "tool_calls", path) ?? [];
    calls.forEach((call, callIndex) => {
      if (call.kind === "null") return;
      const callPath = `${path}.tool_calls[${callIndex}]`;
      pushText(out, getString(call, "id", callPath));
      const fn = getField(call, "function", callPath);
      if (fn === undefined || fn.kind === "null") return;
      pushText(out, getString(fn, "name", `${callPath}.function`));
      collectEverything(getField(fn, "arguments", `${callPath}.function`), out);
    });
  });
}

// ---- OpenAI-compatible routes ----------------------------------------------

function openaiCompletionTexts(body: JsonNode, out: string[]): void {
  // Ollama's CompletionRequest.Prompt is a Go string: an array is a 400.
  pushText(out, getString(body, "prompt"));
  pushText(out, getString(body, "suffix"));
}

function openaiChatTexts(body: JsonNode, out: string[]): void {
  const messages = getArray(body, "messages") ?? [];
  messages.forEach((message, index) => {
    if (message.kind === "null") return;
    const path = `messages[${index}]`;

    pushRole(out, getString(message, "role", path));
    // `name` becomes the tool name of a tool message, which templates print.
    pushText(out, getString(message, "name", path));
    pushText(out, getString(message, "reasoning", path));
    pushText(out, getString(message, "tool_call_id", path));
    openaiContent(getField(message, "content", path), `${path}.content`, out);

    const calls = getArray(message, "tool_calls", path) ?? [];
    calls.forEach((call, callIndex) => {
      if (call.kind === "null") return;
      const callPath = `${path}.tool_calls[${callIndex}]`;
      pushText(out, getString(call, "id", callPath));
      const fn = getField(call, "function", callPath);
      if (fn === undefined || fn.kind === "null") return;
      const fnPath = `${callPath}.function`;
      pushText(out, getString(fn, "name", fnPath));
      pushJsonText(
        out,
        getString(fn, "arguments", fnPath),
        `${fnPath}.arguments`,
      );
    });
  });

  collectEverything(getField(body, "tools"), out);
}

/**
 * Message content that is a string or an array of parts: a string is pushed
 * as a text and the parts are returned; absent or null gives nothing; any
 * other type is one Ollama refuses.
 */
function stringOrParts(
  content: JsonNode | undefined,
  path: string,
  out: string[],
): readonly JsonNode[] | undefined {
  if (content === undefined || content.kind === "null") return undefined;
  if (content.kind === "string") {
    out.push(content.value);
    return undefined;
  }
  if (content.kind !== "array") {
    throw new FieldTypeError(path, "string or array", content);
  }
  return content.items;
}

/**
 * OpenAI message content: a string or parts. Parts are decoded by Ollama as
 * `map[string]any`, so their keys are exact; each text part becomes its own
 * message.
 */
function openaiContent(
  content: JsonNode | undefined,
  path: string,
  out: string[],
): void {
  const parts = stringOrParts(content, path, out);
  parts?.forEach((part, index) => {
    const partPath = `${path}[${index}]`;
    if (part.kind !== "object") {
      throw new FieldTypeError(partPath, "object", part);
    }
    const type = getMapEntry(part, "type", partPath);
    const kind = type?.kind === "string" ? type.value : undefined;
    if (kind === "text") {
      out.push(mapString(part, "text", partPath));
    } else if (kind !== "image_url" && kind !== "input_audio") {
      // Ollama refuses other parts; reading them anyway costs nothing.
      collectEverything(part, out);
    }
  });
}

// ---- /v1/responses ---------------------------------------------------------

function responsesTexts(body: JsonNode, out: string[]): void {
  pushText(out, getString(body, "instructions"));

  const input = getField(body, "input");
  if (input !== undefined && input.kind !== "null") {
    if (input.kind === "string") out.push(input.value);
    else if (input.kind === "array") responsesItems(input.items, out);
    else throw new FieldTypeError("input", "string or array", input);
  }

  collectEverything(getField(body, "tools"), out);
}

function responsesItems(items: readonly JsonNode[], out: string[]): void {
  items.forEach((item, index) => {
    const path = `input[${index}]`;
    if (item.kind !== "object") throw new FieldTypeError(path, "object", item);

    const type = getString(item, "type", path) ?? "";
    const role = getString(item, "role", path) ?? "";
    const itemType = type === "" && role !== "" ? "message" : type;
    switch (itemType) {
      case "message":
        pushRole(out, role);
        responsesContent(
          getField(item, "content", path),
          `${path}.content`,
          out,
        );
        break;
      case "function_call":
        pushText(out, getString(item, "call_id", path));
        pushText(out, getString(item, "name", path));
        pushJsonText(
          out,
          getString(item, "arguments", path),
          `${path}.arguments`,
        );
        break;
      case "function_call_output":
        pushText(out, getString(item, "call_id", path));
        responsesContent(getField(item, "output", path), `${path}.output`, out);
        break;
      case "reasoning":
        // Ollama passes this back to the model as the message's thinking.
        pushText(out, getString(item, "encrypted_content", path));
        break;
      default:
        // web_search_call is history Ollama drops; other types it refuses.
    }
  });
}

/**
 * Responses content (a message's `content`, a function output's `output`):
 * a string or content items, whose text Ollama joins without a separator.
 */
function responsesContent(
  content: JsonNode | undefined,
  path: string,
  out: string[],
): void {
  const parts = stringOrParts(content, path, out);
  if (parts === undefined) return;
  const texts: string[] = [];
  parts.forEach((part, index) => {
    const partPath = `${path}[${index}]`;
    if (part.kind !== "object") {
      throw new FieldTypeError(partPath, "object", part);
    }
    const type = getString(part, "type", partPath);
    if (type === "input_text" || type === "output_text") {
      texts.push(getString(part, "text", partPath) ?? "");
    }
  });
  pushJoined(out, texts);
}

// ---- /v1/messages (Anthropic) ----------------------------------------------

function anthropicTexts(body: JsonNode, out: string[]): void {
  // `system` is `any`: a string, or blocks decoded as maps (exact keys).
  // Other types Ollama ignores.
  const system = getField(body, "system");
  if (system?.kind === "string") {
    out.push(system.value);
  } else if (system?.kind === "array") {
    pushJoined(out, textBlocksOfMaps(system.items, "system"));
  }

  const messages = getArray(body, "messages") ?? [];
  messages.forEach((message, index) => {
    const path = `messages[${index}]`;
    if (message.kind !== "object") {
      throw new FieldTypeError(path, "object", message);
    }
    pushRole(out, getString(message, "role", path));

    const contentPath = `${path}.content`;
    const blocks = stringOrParts(
      getField(message, "content", path),
      contentPath,
      out,
    );
    if (blocks !== undefined) anthropicBlocks(blocks, contentPath, out);
  });

  collectEverything(getField(body, "tools"), out);
}

/** Content blocks (Go structs: keys folded); text blocks are joined. */
function anthropicBlocks(
  blocks: readonly JsonNode[],
  path: string,
  out: string[],
): void {
  const texts: string[] = [];
  blocks.forEach((block, index) => {
    if (block.kind === "null") return;
    const blockPath = `${path}[${index}]`;
    if (block.kind !== "object") {
      throw new FieldTypeError(blockPath, "object", block);
    }

    switch (getString(block, "type", blockPath)) {
      case "text":
        texts.push(getString(block, "text", blockPath) ?? "");
        break;
      case "tool_use":
      case "server_tool_use":
        pushText(out, getString(block, "id", blockPath));
        pushText(out, getString(block, "name", blockPath));
        collectEverything(getField(block, "input", blockPath), out);
        break;
      case "tool_result":
        pushText(out, getString(block, "tool_use_id", blockPath));
        toolResultContent(
          getField(block, "content", blockPath),
          `${blockPath}.content`,
          out,
        );
        break;
      case "web_search_tool_result":
        pushText(out, getString(block, "tool_use_id", blockPath));
        collectEverything(getField(block, "content", blockPath), out);
        break;
      case "thinking":
        pushText(out, getString(block, "thinking", blockPath));
        break;
      default:
        // images are not text; Ollama ignores unknown block types.
    }
  });
  pushJoined(out, texts);
}

/**
 * A `tool_result`'s `content` is `any`: a string, or blocks decoded as maps
 * whose `text` blocks Ollama joins. Other types become empty text.
 */
function toolResultContent(
  content: JsonNode | undefined,
  path: string,
  out: string[],
): void {
  if (content?.kind === "string") out.push(content.value);
  else if (content?.kind === "array") {
    pushJoined(out, textBlocksOfMaps(content.items, path));
  }
}

/** Texts of `{"type":"text","text":…}` blocks decoded as Go maps. */
function textBlocksOfMaps(blocks: readonly JsonNode[], path: string): string[] {
  const texts: string[] = [];
  blocks.forEach((block, index) => {
    if (block.kind !== "object") return;
    const blockPath = `${path}[${index}]`;
    const type = getMapEntry(block, "type", blockPath);
    if (type?.kind !== "string" || type.value !== "text") return;
    const text = getMapEntry(block, "text", blockPath);
    if (text?.kind === "string") texts.push(text.value);
  });
  return texts;
}

// ---- helpers ---------------------------------------------------------------

const STANDARD_ROLES = new Set([
  "system",
  "user",
  "assistant",
  "tool",
  "developer",
]);

/**
 * Some templates print the role verbatim (Llama 3's header), so an unusual
 * role is text the model reads; the standard ones are left out so that a
 * pattern such as `system` does not refuse every chat.
 */
function pushRole(out: string[], role: string | undefined): void {
  if (role !== undefined && !STANDARD_ROLES.has(role.toLowerCase())) {
    out.push(role);
  }
}

function pushText(out: string[], text: string | undefined): void {
  if (text !== undefined) out.push(text);
}

/** Each part, and their concatenation when there are several. */
function pushJoined(out: string[], texts: readonly string[]): void {
  out.push(...texts);
  if (texts.length > 1) out.push(texts.join(""));
}

/**
 * A string field holding JSON (OpenAI tool-call arguments), which Ollama
 * decodes before the model sees it: its strings and keys are listed decoded,
 * so `\u0069gnore` is seen as `ignore`. Text that does not parse is refused
 * rather than matched undecoded.
 */
function pushJsonText(
  out: string[],
  text: string | undefined,
  path: string,
): void {
  if (text === undefined || text === "") return;
  out.push(text);

  let decoded: JsonNode;
  try {
    decoded = parseJsonAsGo(new TextEncoder().encode(text));
  } catch {
    throw new FieldTypeError(path, "string holding JSON", {
      kind: "string",
      value: text,
    });
  }
  collectEverything(decoded, out);
}

/** A string entry of a Go map; absent or another type throws. */
function mapString(node: JsonNode, key: string, path: string): string {
  const value = getMapEntry(node, key, path);
  if (value?.kind !== "string") {
    throw new FieldTypeError(`${path}.${key}`, "string", value ?? NULL);
  }
  return value.value;
}

const NULL: JsonNode = { kind: "null" };

/**
 * Every string value and object key under `node`: for values a template
 * prints as JSON (tools) or that are free-form (tool-call arguments).
 */
function collectEverything(node: JsonNode | undefined, out: string[]): void {
  if (node === undefined) return;
  switch (node.kind) {
    case "string":
      out.push(node.value);
      break;
    case "array":
      for (const item of node.items) collectEverything(item, out);
      break;
    case "object":
      for (const [key, value] of node.entries) {
        out.push(key);
        collectEverything(value, out);
      }
      break;
    default:
  }
}
