/**
 * Reading typed fields out of the parsed config tree: every read knows its
 * field path and YAML line, unknown fields get a "did you mean" hint, and a
 * value of the wrong type is reported with the type that was expected.
 *
 * @module
 */

import type { ConfigIssue } from "./errors.ts";

/** A scalar from the YAML file, after `${VAR}` expansion. */
export interface ConfigScalar {
  readonly kind: "scalar";
  readonly value: string | number | boolean | null;
  readonly line: number;
  /**
   * An unquoted scalar that contained `${VAR}`: its expanded text may stand
   * for a number or a boolean (`max_ctx: ${CTX}`), as if expanded before
   * parsing.
   */
  readonly retypable: boolean;
  /**
   * A problem with this value was already reported (an unset variable, a
   * broken alias): readers treat it as absent and say nothing more.
   */
  readonly broken?: boolean;
}

/** A YAML mapping; keys are the names as written. */
export interface ConfigMap {
  readonly kind: "map";
  readonly entries: ReadonlyMap<string, ConfigNode>;
  readonly line: number;
}

/** A YAML sequence. */
export interface ConfigList {
  readonly kind: "list";
  readonly items: readonly ConfigNode[];
  readonly line: number;
}

/** Any node of the parsed config. */
export type ConfigNode = ConfigScalar | ConfigMap | ConfigList;

/** Collects issues while the config is walked. */
export class IssueCollector {
  readonly issues: ConfigIssue[] = [];
  /**
   * Set when the file expanded past the value limit and the tree was cut:
   * fields past the cut read as absent, so "missing" is not reported.
   */
  truncated = false;

  /** Records a problem at `path`, on `line` when known. */
  add(path: string, line: number | undefined, message: string): void {
    this.issues.push(
      line === undefined ? { path, message } : {
        path,
        line,
        message,
      },
    );
  }
}

/** Joins a field path: `clients[2]` + `rate_limit`, `role_policies` + `a.b`. */
export function childPath(parent: string, name: string | number): string {
  if (typeof name === "number") return `${parent}[${name}]`;
  const part = /^[A-Za-z_][A-Za-z0-9_-]*$/.test(name)
    ? name
    : `[${JSON.stringify(name)}]`;
  if (parent === "") return part;
  return part.startsWith("[") ? parent + part : `${parent}.${part}`;
}

/** How a value is shown in a message; secrets show only their length. */
export function describeValue(node: ConfigNode, secret = false): string {
  if (node.kind === "map") return "a map";
  if (node.kind === "list") return "a list";
  if (secret) {
    return typeof node.value === "string"
      ? `<redacted> (${node.value.length} characters)`
      : `<redacted> (${typeName(node.value)})`;
  }
  if (typeof node.value === "string") {
    const shown = node.value.length > 80
      ? node.value.slice(0, 77) + "..."
      : node.value;
    return JSON.stringify(shown);
  }
  return String(node.value);
}

function typeName(value: string | number | boolean | null): string {
  if (value === null) return "null";
  return typeof value === "number" ? "a number" : `a ${typeof value}`;
}

/** The known field closest to `name`, if it is close enough to be a typo. */
export function closestField(
  name: string,
  known: readonly string[],
): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const candidate of known) {
    const distance = editDistance(name.toLowerCase(), candidate);
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length];
}

/** Options for reading one field. */
export interface FieldOptions {
  /** Report the field as missing when absent. */
  readonly required?: boolean;
  /** Never print the value (keys, secrets, password hashes). */
  readonly secret?: boolean;
}

/**
 * Typed access to one YAML mapping. Unknown fields are reported when the
 * reader is opened; each typed read reports a wrong type and returns
 * `undefined` so the walk goes on and collects every problem.
 */
export class FieldReader {
  readonly path: string;
  readonly line: number;
  readonly #node: ConfigMap;
  readonly #issues: IssueCollector;

  /**
   * Opens `node` at `path`, reporting every field not in `known`. `elsewhere`
   * maps a misplaced field name to where it belongs (`under "auth"`, `at the
   * top level`), for a better hint.
   */
  constructor(
    node: ConfigMap,
    options: {
      path: string;
      known: readonly string[];
      issues: IssueCollector;
      elsewhere?: Readonly<Record<string, string>>;
    },
  ) {
    this.path = options.path;
    this.line = node.line;
    this.#node = node;
    this.#issues = options.issues;

    for (const [name, value] of node.entries) {
      if (options.known.includes(name)) continue;
      const home = options.elsewhere?.[name];
      const guess = closestField(name, options.known);
      const hint = home !== undefined
        ? `; it belongs ${home}`
        : guess !== undefined
        ? `; did you mean "${guess}"?`
        : "";
      this.#issues.add(
        childPath(this.path, name),
        value.line,
        `unknown field ${JSON.stringify(name)}${hint}`,
      );
    }
  }

  /** Field path of `name` inside this map. */
  pathOf(name: string): string {
    return childPath(this.path, name);
  }

  /** Line of `name`'s value, or of this map when `name` is absent. */
  lineOf(name: string): number {
    return this.#node.entries.get(name)?.line ?? this.line;
  }

  /** Whether `name` is written in the map at all, even as null. */
  written(name: string): boolean {
    return this.#node.entries.has(name);
  }

  /** Records a problem about field `name`. */
  report(name: string, message: string): void {
    this.#issues.add(this.pathOf(name), this.lineOf(name), message);
  }

  /** The raw node of `name`; an explicit YAML null counts as absent. */
  node(name: string, options: FieldOptions = {}): ConfigNode | undefined {
    const node = this.#node.entries.get(name);
    if (node?.kind === "scalar" && node.broken) return undefined;
    if (node === undefined || (node.kind === "scalar" && node.value === null)) {
      if (options.required) this.report(name, "required field is missing");
      return undefined;
    }
    return node;
  }

  /** A string field. */
  string(name: string, options: FieldOptions = {}): string | undefined {
    const node = this.node(name, options);
    if (node === undefined) return undefined;
    if (node.kind === "scalar" && typeof node.value === "string") {
      return node.value;
    }
    const quote = node.kind === "scalar" ? " (put it in quotes)" : "";
    this.report(
      name,
      `expected a string, got ${describeValue(node, options.secret)}${quote}`,
    );
    return undefined;
  }

  /** A non-empty string field. */
  nonEmptyString(
    name: string,
    options: FieldOptions = {},
  ): string | undefined {
    const value = this.string(name, options);
    if (value === undefined || value.trim() !== "") return value;
    this.report(name, "must not be empty");
    return undefined;
  }

  /** A boolean field with its default. */
  boolean(name: string, defaultValue: boolean): boolean {
    const node = this.node(name);
    if (node === undefined) return defaultValue;
    if (node.kind === "scalar") {
      if (typeof node.value === "boolean") return node.value;
      if (node.retypable && typeof node.value === "string") {
        if (/^(true|True|TRUE)$/.test(node.value)) return true;
        if (/^(false|False|FALSE)$/.test(node.value)) return false;
      }
    }
    this.report(
      name,
      `expected a boolean (true or false), got ${describeValue(node)}`,
    );
    return defaultValue;
  }

  /** A non-negative integer field. */
  integer(name: string): number | undefined {
    const node = this.node(name);
    if (node === undefined) return undefined;
    const value = integerValue(node);
    if (value !== undefined && value >= 0) return value;
    this.report(
      name,
      `expected a non-negative integer, got ${describeValue(node)}`,
    );
    return undefined;
  }

  /** A list field; absent is an empty list. */
  list(name: string): readonly ConfigNode[] {
    const node = this.node(name);
    if (node === undefined) return [];
    if (node.kind === "list") return node.items;
    this.report(name, `expected a list, got ${describeValue(node)}`);
    return [];
  }

  /** A list of strings; other items are reported with their index. */
  stringList(name: string): { value: string; index: number }[] {
    const strings: { value: string; index: number }[] = [];
    this.list(name).forEach((item, index) => {
      if (item.kind === "scalar" && item.broken) return;
      if (item.kind === "scalar" && typeof item.value === "string") {
        strings.push({ value: item.value, index });
        return;
      }
      this.#issues.add(
        childPath(this.pathOf(name), index),
        item.line,
        `expected a string, got ${describeValue(item)}`,
      );
    });
    return strings;
  }

  /** A mapping field, or `undefined` when absent or of another type. */
  map(name: string, options: FieldOptions = {}): ConfigMap | undefined {
    const node = this.node(name, options);
    if (node === undefined) return undefined;
    if (node.kind === "map") return node;
    this.report(name, `expected a map of fields, got ${describeValue(node)}`);
    return undefined;
  }

  /** Runs `parse` on a string field and reports its RangeError. */
  parsed<T>(
    name: string,
    parse: (text: string) => T,
    options: FieldOptions = {},
  ): T | undefined {
    const text = this.string(name, options);
    if (text === undefined) return undefined;
    try {
      return parse(text);
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      this.report(name, error.message);
      return undefined;
    }
  }
}

/** The integer a node holds (counting expanded unquoted text), if any. */
export function integerValue(node: ConfigNode): number | undefined {
  if (node.kind !== "scalar") return undefined;
  if (typeof node.value === "number") {
    return Number.isSafeInteger(node.value) ? node.value : undefined;
  }
  if (
    node.retypable && typeof node.value === "string" &&
    /^[-+]?[0-9]+$/.test(node.value)
  ) {
    const value = Number(node.value);
    return Number.isSafeInteger(value) ? value : undefined;
  }
  return undefined;
}
