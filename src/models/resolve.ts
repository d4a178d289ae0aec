/**
 * Model references read the way Ollama reads them (`internal/modelref` and
 * `types/model/name.go` in Ollama's source): white space trimmed, a source
 * suffix split off, then `[host/][namespace/]model[:tag]` with defaults
 * filled in. Butler decides on the resolved parts, never on the text, so
 * `LLAMA3.2`, `library/llama3.2:latest` and `llama3.2:latest:local` are one
 * model to it as they are to Ollama.
 *
 * Where Ollama would accept something Butler cannot vouch for (a protocol
 * scheme before the host), the reference is refused: fail closed.
 *
 * @module
 */

/** Where Ollama runs a model: `cloud` sends the prompt to ollama.com. */
export type ModelSource = "default" | "cloud" | "local";

/** A resolved model reference; every part lower-cased for comparison. */
export interface ModelRef {
  readonly host: string;
  readonly namespace: string;
  readonly model: string;
  /** The tag without a `-cloud` ending (Ollama strips it and marks cloud). */
  readonly tag: string;
  /** The text named a tag; `false` when Ollama filled in `latest`. */
  readonly hasTag: boolean;
  /**
   * `cloud`: Ollama forwards the request to ollama.com. `local`: the text
   * ended in `:local`, which also stops Ollama from forwarding a local stub
   * of a cloud model. `default`: neither suffix.
   */
  readonly source: ModelSource;
  /**
   * Canonical `host/namespace/model:tag`, with `:cloud` appended for the
   * cloud source, for logs and matching. `local` and `default` share it:
   * they name the same installed model.
   */
  readonly full: string;
  /**
   * Short form: `model:tag` when host and namespace are the defaults, else
   * `namespace/model:tag` or `host/namespace/model:tag`; `:cloud` appended
   * for the cloud source.
   */
  readonly display: string;
}

/** A model reference Ollama would refuse, or Butler cannot vouch for. */
export class ModelRefError extends Error {
  /** The reference as received (possibly shortened). */
  readonly reference: string;

  /** Builds the error; `rule` says what the reference breaks. */
  constructor(reference: string, rule: string) {
    const shown = reference.length > 120
      ? reference.slice(0, 120) + "…"
      : reference;
    super(`model ${JSON.stringify(shown)}: ${rule}`);
    this.name = "ModelRefError";
    this.reference = shown;
  }
}

const DEFAULT_HOST = "registry.ollama.ai";
const DEFAULT_NAMESPACE = "library";
const DEFAULT_TAG = "latest";

// Part syntax of Ollama's isValidPart: ASCII only, first character a letter,
// digit or underscore. Lengths are checked separately (bytes = characters
// for ASCII).
const HOST = /^[A-Za-z0-9_][A-Za-z0-9_.:-]*$/;
const NAMESPACE = /^[A-Za-z0-9_][A-Za-z0-9_-]*$/;
const MODEL_OR_TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const MAX_HOST = 350;
const MAX_PART = 80;

/**
 * Resolves a model reference as Ollama does.
 *
 * 1. White space is trimmed (Go's `strings.TrimSpace` set, not JavaScript's).
 * 2. If the text after the last `:` is `cloud` or `local` (any case) it is
 *    removed and sets the source; a last part ending in `-cloud` loses that
 *    ending and sets the cloud source. A second source suffix is an error.
 * 3. The rest is `[host/][namespace/]model[:tag]`, defaults
 *    `registry.ollama.ai`, `library`, `latest`; every part must follow
 *    Ollama's character and length rules.
 *
 * Refused with {@linkcode ModelRefError}: empty references, invalid parts,
 * two source suffixes, a digest (`@sha256:…`: current Ollama reads no digest
 * and refuses the `@`), and a protocol scheme (`https://host/ns/model`,
 * which Ollama accepts but Butler does not vouch for).
 *
 * @example
 * ```ts
 * resolveModelRef(" LLAMA3.2 ").full; // "registry.ollama.ai/library/llama3.2:latest"
 * resolveModelRef("gpt-oss:120b-cloud").source; // "cloud"
 * ```
 */
export function resolveModelRef(text: string): ModelRef {
  const raw = trimGoSpace(text);
  if (raw === "") throw new ModelRefError(text, "a model name is required");

  const { base, source } = splitSource(raw);
  if (source !== "default" && splitSource(base).source !== "default") {
    throw new ModelRefError(
      text,
      "names two sources; use either :local or :cloud, not both",
    );
  }
  if (base.includes("@")) {
    throw new ModelRefError(
      text,
      "digests (@…) are not accepted; Ollama does not read them",
    );
  }

  const parts = splitName(text, base);
  const host = (parts.host ?? DEFAULT_HOST).toLowerCase();
  const namespace = (parts.namespace ?? DEFAULT_NAMESPACE).toLowerCase();
  const model = parts.model.toLowerCase();
  const tag = (parts.tag ?? DEFAULT_TAG).toLowerCase();

  const cloud = source === "cloud" ? ":cloud" : "";
  let prefix = "";
  if (host !== DEFAULT_HOST) prefix = `${host}/${namespace}/`;
  else if (namespace !== DEFAULT_NAMESPACE) prefix = `${namespace}/`;

  return Object.freeze({
    host,
    namespace,
    model,
    tag,
    hasTag: parts.tag !== undefined,
    source,
    full: `${host}/${namespace}/${model}:${tag}${cloud}`,
    display: `${prefix}${model}:${tag}${cloud}`,
  });
}

/**
 * Splits a source suffix off, as Ollama's `parseSourceSuffix`: the text
 * after the last `:`, trimmed and lower-cased, is `cloud` or `local`, or
 * ends in `-cloud` and holds no `/`.
 */
function splitSource(raw: string): { base: string; source: ModelSource } {
  const colon = raw.lastIndexOf(":");
  if (colon < 0) return { base: raw, source: "default" };

  const suffixRaw = trimGoSpace(raw.slice(colon + 1));
  const suffix = suffixRaw.toLowerCase();
  if (suffix === "cloud") return { base: raw.slice(0, colon), source: "cloud" };
  if (suffix === "local") return { base: raw.slice(0, colon), source: "local" };
  if (!suffixRaw.includes("/") && suffix.endsWith("-cloud")) {
    return {
      base: raw.slice(0, colon + 1) + suffixRaw.slice(0, -"-cloud".length),
      source: "cloud",
    };
  }
  return { base: raw, source: "default" };
}

interface NameParts {
  host?: string;
  namespace?: string;
  model: string;
  tag?: string;
}

/**
 * Ollama's `ParseNameBare` followed by its validity check. A separator with
 * nothing on one side makes the name invalid, as Ollama's "missing part"
 * marker does.
 */
function splitName(text: string, base: string): NameParts {
  let rest = base;
  let tag: string | undefined;

  // "/" cannot occur in a tag, so a ":" after the last "/" starts the tag;
  // one before it belongs to a host:port.
  if (rest.lastIndexOf(":") > rest.lastIndexOf("/")) {
    [rest, tag] = cutLast(text, rest, ":", "tag");
  }

  let model = rest;
  let namespace: string | undefined;
  let host: string | undefined;
  if (rest.includes("/")) {
    [rest, model] = cutLast(text, rest, "/", "model");
    namespace = rest;
    if (rest.includes("/")) {
      [host, namespace] = cutLast(text, rest, "/", "namespace");
      if (host.includes("://")) {
        throw new ModelRefError(
          text,
          "a protocol scheme (…://) before the host is not accepted",
        );
      }
    }
  }

  checkPart(text, "host", host, HOST, MAX_HOST);
  checkPart(text, "namespace", namespace, NAMESPACE, MAX_PART);
  checkPart(text, "model", model, MODEL_OR_TAG, MAX_PART);
  checkPart(text, "tag", tag, MODEL_OR_TAG, MAX_PART);
  return { host, namespace, model, tag };
}

function cutLast(
  text: string,
  value: string,
  separator: string,
  after: string,
): [string, string] {
  const at = value.lastIndexOf(separator);
  const before = value.slice(0, at);
  const rest = value.slice(at + 1);
  if (before === "" || rest === "") {
    throw new ModelRefError(
      text,
      `"${separator}" must have text on both sides (empty ${
        rest === "" ? after : "part before it"
      })`,
    );
  }
  return [before, rest];
}

function checkPart(
  text: string,
  kind: string,
  part: string | undefined,
  syntax: RegExp,
  maxLength: number,
): void {
  if (part === undefined) return;
  if (part.length > maxLength) {
    throw new ModelRefError(
      text,
      `the ${kind} is ${part.length} characters long; at most ${maxLength}`,
    );
  }
  if (!syntax.test(part)) {
    throw new ModelRefError(
      text,
      `the ${kind} ${JSON.stringify(part.slice(0, 120))} is invalid; ` +
        `use ASCII letters, digits, "_" and ${
          kind === "host"
            ? `"-", "." or ":"`
            : kind === "namespace"
            ? `"-"`
            : `"-" or "."`
        }, starting with a letter, digit or "_"`,
    );
  }
}

/** Go's `unicode.IsSpace`, which `strings.TrimSpace` trims. */
function isGoSpace(code: number): boolean {
  if (code <= 0xff) {
    return (code >= 0x09 && code <= 0x0d) || code === 0x20 ||
      code === 0x85 || code === 0xa0;
  }
  return code === 0x1680 || (code >= 0x2000 && code <= 0x200a) ||
    code === 0x2028 || code === 0x2029 || code === 0x202f ||
    code === 0x205f || code === 0x3000;
}

// A loop, not a regular expression: `[\s]+$` backtracks quadratically on a
// long run of spaces followed by another character.
function trimGoSpace(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && isGoSpace(text.charCodeAt(start))) start++;
  while (end > start && isGoSpace(text.charCodeAt(end - 1))) end--;
  return text.slice(start, end);
}
