/**
 * Reference model-reference resolution, as Ollama does it (shared
 * `ollama-api.md` §2): trim, split a `:cloud` / `:local` / `-cloud` source
 * suffix, parse `[host/][namespace/]model[:tag]` with defaults, and match
 * installed models part by part ignoring case. Independent of Butler's code.
 *
 * @module
 */

/** Where Ollama runs a model: `cloud` means the prompt goes to ollama.com. */
export type ModelSource = "cloud" | "local";

/** A model reference after source-suffix parsing. */
export interface ParsedModelRef {
  /** The reference as given, trimmed. */
  readonly original: string;
  /** The reference without its source suffix. */
  readonly base: string;
  readonly source?: ModelSource;
}

/** A fully-qualified model name. */
export interface ModelName {
  readonly host: string;
  readonly namespace: string;
  readonly model: string;
  readonly tag: string;
}

const MISSING = "!MISSING!";

// Go's unicode.IsSpace: Latin-1 space characters plus the White_Space
// property. Unlike JavaScript's trim it includes U+0085 and excludes U+FEFF.
const GO_SPACE =
  "\t\n\v\f\r \u0085\u00A0\u1680\u2000\u2001\u2002\u2003\u2004\u2005" +
  "\u2006\u2007\u2008\u2009\u200A\u2028\u2029\u202F\u205F\u3000";

/** `strings.TrimSpace` with Go's definition of white space. */
export function goTrimSpace(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && GO_SPACE.includes(text[start])) start++;
  while (end > start && GO_SPACE.includes(text[end - 1])) end--;
  return text.slice(start, end);
}

function splitSource(
  raw: string,
): { base: string; source?: ModelSource; explicit: boolean } {
  const idx = raw.lastIndexOf(":");
  if (idx >= 0) {
    const suffixRaw = goTrimSpace(raw.slice(idx + 1));
    const suffix = suffixRaw.toLowerCase();
    if (suffix === "cloud") {
      return { base: raw.slice(0, idx), source: "cloud", explicit: true };
    }
    if (suffix === "local") {
      return { base: raw.slice(0, idx), source: "local", explicit: true };
    }
    if (!suffixRaw.includes("/") && suffix.endsWith("-cloud")) {
      return {
        base: raw.slice(0, idx + 1) + suffixRaw.slice(0, -"-cloud".length),
        source: "cloud",
        explicit: true,
      };
    }
  }
  return { base: raw, explicit: false };
}

/**
 * Splits the source suffix off a model reference (`modelref.ParseRef`).
 * Returns an error text for an empty reference or two source suffixes.
 */
export function parseModelRef(
  raw: string,
): ParsedModelRef | { error: string; status: number } {
  const trimmed = goTrimSpace(raw);
  if (trimmed === "") return { error: "model is required", status: 404 };

  const { base, source, explicit } = splitSource(trimmed);
  if (explicit && splitSource(base).explicit) {
    return {
      error: `use either :local or :cloud, not both: "${trimmed}"`,
      status: 400,
    };
  }
  return { original: trimmed, base, source };
}

function cutPromised(text: string, sep: string): [string, string, boolean] {
  const i = text.lastIndexOf(sep);
  if (i < 0) return [text, "", false];
  return [
    text.slice(0, i) || MISSING,
    text.slice(i + sep.length) || MISSING,
    true,
  ];
}

/**
 * Parses `[host/][namespace/]model[:tag]` and fills the defaults
 * (`model.ParseName`). The result may be invalid: check it with
 * {@linkcode isValidModelName}.
 */
export function parseModelName(text: string): ModelName {
  let rest = text;
  let tag = "";
  if (rest.lastIndexOf(":") > rest.lastIndexOf("/")) {
    [rest, tag] = cutPromised(rest, ":");
  }

  let model: string;
  let namespace = "";
  let host = "";
  let promised: boolean;
  [rest, model, promised] = cutPromised(rest, "/");
  if (!promised) {
    model = rest;
  } else {
    [rest, namespace, promised] = cutPromised(rest, "/");
    if (!promised) {
      namespace = rest;
    } else {
      const scheme = rest.indexOf("://");
      host = scheme >= 0 ? rest.slice(scheme + 3) : rest;
    }
  }

  return {
    host: host || "registry.ollama.ai",
    namespace: namespace || "library",
    model,
    tag: tag || "latest",
  };
}

function isValidPart(kind: keyof ModelName, part: string): boolean {
  const max = kind === "host" ? 350 : 80;
  if (part.length < 1 || part.length > max) return false;
  for (let i = 0; i < part.length; i++) {
    const c = part[i];
    const alnum = /[A-Za-z0-9_]/.test(c);
    if (i === 0) {
      if (!alnum) return false;
      continue;
    }
    if (alnum || c === "-") continue;
    if (c === "." && kind !== "namespace") continue;
    if (c === ":" && kind === "host") continue;
    return false;
  }
  return true;
}

/** Whether every part of the name is valid (`Name.IsValid`). */
export function isValidModelName(name: ModelName): boolean {
  return isValidPart("host", name.host) &&
    isValidPart("namespace", name.namespace) &&
    isValidPart("model", name.model) && isValidPart("tag", name.tag);
}

/** `host/namespace/model:tag`. */
export function formatModelName(name: ModelName): string {
  return `${name.host}/${name.namespace}/${name.model}:${name.tag}`;
}

function equalFold(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

/**
 * Canonicalizes each part of `name` to the case of an installed model's
 * matching part (`getExistingName`; parts are matched independently), then
 * reports whether that exact model is installed.
 */
export function findInstalled(
  name: ModelName,
  installed: readonly string[],
): { name: ModelName; installed: boolean } {
  const parsed = installed.map(parseModelName);
  let { host, namespace, model, tag } = name;
  for (const e of parsed) {
    if (equalFold(e.host, host)) host = e.host;
    if (equalFold(e.namespace, namespace)) namespace = e.namespace;
    if (equalFold(e.model, model)) model = e.model;
    if (equalFold(e.tag, tag)) tag = e.tag;
  }
  const canonical = { host, namespace, model, tag };
  const full = formatModelName(canonical);
  return {
    name: canonical,
    installed: parsed.some((e) => formatModelName(e) === full),
  };
}

/** The outcome of resolving a reference for an inference route. */
export type Resolution =
  | {
    readonly ok: true;
    /** Full normalized name, e.g. `registry.ollama.ai/library/llama3.2:latest`. */
    readonly full: string;
    readonly source?: ModelSource;
    /** Installed locally (always false for a cloud-source reference). */
    readonly installed: boolean;
  }
  | { readonly ok: false; readonly status: number; readonly error: string };

/**
 * Resolves a model reference the way Ollama's inference handlers do
 * (`parseAndValidateModelRef` then `getExistingName`). A cloud-source
 * reference is not looked up: Ollama forwards it to ollama.com.
 */
export function resolveModelRef(
  raw: string,
  options: { installed: readonly string[] },
): Resolution {
  const ref = parseModelRef(raw);
  if ("error" in ref) {
    return ref.status === 400
      ? { ok: false, status: 400, error: ref.error }
      : { ok: false, status: 404, error: `model '${raw}' not found` };
  }

  const name = parseModelName(ref.base);
  if (!isValidModelName(name)) {
    return { ok: false, status: 400, error: "invalid model name" };
  }
  if (ref.source === "cloud") {
    return {
      ok: true,
      full: formatModelName(name),
      source: "cloud",
      installed: false,
    };
  }

  const found = findInstalled(name, options.installed);
  return {
    ok: true,
    full: formatModelName(found.name),
    source: ref.source,
    installed: found.installed,
  };
}
