/**
 * Reading `butler.yaml`: the file is parsed as YAML keeping each node's line,
 * `${VAR}` references are expanded inside parsed string values (so a variable
 * can never add YAML structure), and the tree is validated and compiled into
 * the frozen `Policy`.
 *
 * @module
 */

import {
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node as YamlNode,
  parseDocument,
  Scalar,
} from "yaml";
import { ConfigError, type ConfigIssue } from "./errors.ts";
import {
  childPath,
  type ConfigNode,
  type ConfigScalar,
  IssueCollector,
} from "./fields.ts";
import type { Policy } from "./policy.ts";
import { validatePolicy } from "./validate.ts";

/** Looks up an environment variable; `undefined` when it is not set. */
export type EnvLookup = (name: string) => string | undefined;

/** Options for {@linkcode loadPolicy}. */
export interface LoadOptions {
  /** Where `${VAR}` values come from. Defaults to `Deno.env.get`. */
  readonly env?: EnvLookup;
}

/** Options for {@linkcode compilePolicy}. */
export interface CompileOptions extends LoadOptions {
  /** Shown in messages and kept as `Policy.configPath`. */
  readonly path: string;
}

/**
 * Reads, expands, validates and compiles the config file at `path`.
 *
 * @throws {ConfigError} listing every problem found, not just the first.
 *
 * @example
 * ```ts
 * const policy = await loadPolicy("./butler.yaml");
 * console.log(policy.listen.port);
 * ```
 */
export async function loadPolicy(
  path: string,
  options: LoadOptions = {},
): Promise<Policy> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    // A missing --allow-read is a permission problem, not a config one: the
    // command line says so and points at `permissions`.
    if (error instanceof Deno.errors.NotCapable) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(path, [{
      path: "",
      message: `cannot read the config file: ${reason}`,
    }]);
  }
  return await compilePolicy(text, { path, env: options.env });
}

/**
 * Compiles config text, as {@linkcode loadPolicy} does after reading the
 * file (used by tests and by reload).
 *
 * @throws {ConfigError} listing every problem found.
 *
 * @example
 * ```ts
 * const policy = await compilePolicy(
 *   'upstream: http://127.0.0.1:11434\nclients: [{name: a, key: "${KEY}"}]',
 *   { path: "butler.yaml", env: () => "0123456789abcdef" },
 * );
 * ```
 */
export async function compilePolicy(
  text: string,
  options: CompileOptions,
): Promise<Policy> {
  const issues = new IssueCollector();
  const parsed = parseConfigTree(text, {
    env: options.env ?? readEnvironment,
    issues,
  });

  const policy = parsed === undefined ? undefined : await validatePolicy(
    parsed.root,
    { configPath: options.path, envVars: parsed.envVars, issues },
  );

  if (policy === undefined || issues.issues.length > 0) {
    throw new ConfigError(options.path, inFileOrder(issues.issues));
  }
  return policy;
}

function readEnvironment(name: string): string | undefined {
  return Deno.env.get(name);
}

/** Whole-file problems first, then by line; same line keeps walk order. */
function inFileOrder(issues: readonly ConfigIssue[]): ConfigIssue[] {
  return [...issues].sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
}

/** Enough for any real config; stops alias bombs (`&a [*b, *b, …]`). */
const MAX_NODES = 100_000;

const VARIABLE = /\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g;

interface TreeContext {
  readonly env: EnvLookup;
  readonly issues: IssueCollector;
  readonly lines: LineCounter;
  readonly document: ReturnType<typeof parseDocument>;
  readonly envVars: Set<string>;
  /** Collections being converted, to catch an alias inside itself. */
  readonly open: Set<unknown>;
  nodes: number;
}

/**
 * Parses YAML into a tree of `ConfigNode`s with lines and expanded strings.
 * Returns `undefined` when the YAML itself is broken (the problems are in
 * `issues`); `root` is `undefined` for an empty file.
 */
function parseConfigTree(
  text: string,
  options: { env: EnvLookup; issues: IssueCollector },
): { root?: ConfigNode; envVars: readonly string[] } | undefined {
  const lines = new LineCounter();
  const document = parseDocument(text, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
    // Go's yaml.v3, which the Go Butler's configs were written for, has `<<`.
    merge: true,
  });

  // After the first syntax error the parser's further complaints are mostly
  // echoes of it, so only the first is reported.
  const problem = document.errors[0] ?? document.warnings[0];
  if (problem !== undefined) {
    options.issues.add(
      "",
      lines.linePos(problem.pos[0]).line,
      problem.code === "MULTIPLE_DOCS"
        ? "YAML: a second document starts here (---); the config is one " +
          "document, so remove the separator and what follows or merge it " +
          "into the first"
        : `YAML: ${withoutSourceText(problem.message)}`,
    );
    return undefined;
  }

  const context: TreeContext = {
    ...options,
    lines,
    document,
    envVars: new Set(),
    open: new Set(),
    nodes: 0,
  };
  const root = document.contents === null
    ? undefined
    : convert(document.contents, { path: "", line: 1 }, context);
  if (root?.kind === "scalar" && root.value === null) {
    return { envVars: [] };
  }
  return { root, envVars: [...context.envVars].sort() };
}

/**
 * The parser quotes the offending source text in some messages; that text
 * can be a secret, so it is cut.
 */
function withoutSourceText(message: string): string {
  return message.split("\n")[0]
    .replace(/ at line \d+, column \d+.*$/, "")
    .replace(/:?\s*".*$/, "");
}

function lineOf(
  node: { range?: readonly number[] | null } | null | undefined,
  fallback: number,
  context: TreeContext,
): number {
  const offset = node?.range?.[0];
  return offset === undefined ? fallback : context.lines.linePos(offset).line;
}

function convert(
  node: unknown,
  at: { path: string; line: number },
  context: TreeContext,
): ConfigNode {
  context.nodes += 1;
  if (context.nodes === MAX_NODES + 1) {
    context.issues.truncated = true;
    context.issues.add(
      at.path,
      at.line,
      `the file expands to more than ${MAX_NODES} values (YAML aliases?)`,
    );
  }
  if (context.nodes > MAX_NODES) return brokenAt(at.line);

  if (isAlias(node)) {
    const target = node.resolve(context.document);
    const line = lineOf(node, at.line, context);
    if (target === undefined || context.open.has(target)) {
      context.issues.add(
        at.path,
        line,
        `alias *${node.source} refers to itself or to nothing`,
      );
      return brokenAt(line);
    }
    return convert(target, { path: at.path, line }, context);
  }

  if (isScalar(node)) return convertScalar(node, at, context);

  const line = lineOf(node as YamlNode, at.line, context);
  context.open.add(node);
  try {
    if (isMap(node)) {
      return convertMap(node.items, { path: at.path, line }, context);
    }
    if (isSeq(node)) {
      return {
        kind: "list",
        line,
        items: node.items.map((item, index) =>
          convert(item, { path: childPath(at.path, index), line }, context)
        ),
      };
    }
  } finally {
    context.open.delete(node);
  }
  context.issues.add(at.path, line, "unsupported YAML node");
  return brokenAt(line);
}

/** A placeholder for a value whose problem has been reported. */
function brokenAt(line: number): ConfigScalar {
  return { kind: "scalar", value: null, line, retypable: false, broken: true };
}

function convertScalar(
  node: Scalar,
  at: { path: string; line: number },
  context: TreeContext,
): ConfigScalar {
  const line = lineOf(node, at.line, context);
  const value = node.value;

  if (typeof value === "string") {
    let expanded = false;
    let broken = false;
    const text = value.replace(VARIABLE, (_match, name: string) => {
      expanded = true;
      const variable = readVariable(name, { path: at.path, line }, context);
      broken ||= variable === undefined;
      return variable ?? "";
    });
    if (broken) return brokenAt(line);
    return {
      kind: "scalar",
      value: text,
      line,
      retypable: expanded && node.type === Scalar.PLAIN,
    };
  }

  if (
    value === null || typeof value === "number" || typeof value === "boolean"
  ) {
    return { kind: "scalar", value, line, retypable: false };
  }

  context.issues.add(
    at.path,
    line,
    `unsupported YAML value${node.tag ? ` with tag ${node.tag}` : ""}; ` +
      "write a string, number or boolean",
  );
  return brokenAt(line);
}

function readVariable(
  name: string,
  at: { path: string; line: number },
  context: TreeContext,
): string | undefined {
  context.envVars.add(name);
  let value: string | undefined;
  try {
    value = context.env(name);
  } catch (error) {
    // Under `--allow-env=<names>`, reading another name throws NotCapable.
    const reason = error instanceof Error ? error.message : String(error);
    context.issues.add(
      at.path,
      at.line,
      `environment variable ${name} cannot be read: ${reason}`,
    );
    return undefined;
  }
  if (value === undefined) {
    context.issues.add(
      at.path,
      at.line,
      `environment variable ${name} is not set`,
    );
  }
  return value;
}

function convertMap(
  pairs: readonly { key: unknown; value: unknown }[],
  at: { path: string; line: number },
  context: TreeContext,
): ConfigNode {
  const entries = new Map<string, ConfigNode>();
  const merged: { value: unknown; line: number }[] = [];

  for (const pair of pairs) {
    const keyLine = lineOf(pair.key as YamlNode, at.line, context);
    const key = isScalar(pair.key) ? pair.key.value : undefined;
    if (typeof key === "symbol") {
      merged.push({ value: pair.value, line: keyLine });
      continue;
    }
    if (
      typeof key !== "string" && typeof key !== "number" &&
      typeof key !== "boolean"
    ) {
      context.issues.add(
        at.path,
        keyLine,
        "a field name must be a plain string",
      );
      continue;
    }

    const name = String(key);
    entries.set(
      name,
      pair.value === null ? brokenAt(keyLine) : convert(
        pair.value,
        { path: childPath(at.path, name), line: keyLine },
        context,
      ),
    );
  }

  // `<<: *defaults` fills in what the map does not set itself.
  for (const merge of merged) {
    const sources = isSeq(merge.value) ? merge.value.items : [merge.value];
    for (const source of sources) {
      const node = convert(
        source,
        { path: at.path, line: merge.line },
        context,
      );
      if (node.kind !== "map") {
        context.issues.add(at.path, merge.line, "`<<` must refer to a map");
        continue;
      }
      for (const [name, value] of node.entries) {
        if (!entries.has(name)) entries.set(name, value);
      }
    }
  }
  return { kind: "map", entries, line: at.line };
}
