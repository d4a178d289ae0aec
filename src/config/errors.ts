/**
 * The error `butler.yaml` problems are reported with. One `ConfigError`
 * carries every problem found, each naming the field path and the YAML line.
 *
 * @module
 */

/** One problem in the config file. */
export interface ConfigIssue {
  /** Field path such as `clients[2].rate_limit`; empty for the whole file. */
  readonly path: string;
  /** 1-based line in the config file, when the problem has a place. */
  readonly line?: number;
  /** What is wrong and what to write instead. Never contains a secret. */
  readonly message: string;
}

/**
 * Renders an issue the way compilers do, e.g.
 * `butler.yaml:12: clients[2].rate_limit: "10/mn" is not a rate; …`.
 *
 * @example
 * ```ts
 * formatConfigIssue("butler.yaml", { path: "listen", line: 1, message: "x" });
 * // "butler.yaml:1: listen: x"
 * ```
 */
export function formatConfigIssue(file: string, issue: ConfigIssue): string {
  const place = issue.line === undefined ? file : `${file}:${issue.line}`;
  const field = issue.path === "" ? "" : `${issue.path}: `;
  return `${place}: ${field}${issue.message}`;
}

/**
 * Thrown when the config cannot be used. `message` lists every issue, one per
 * line, so printing it tells the operator everything to fix in one go.
 *
 * @example
 * ```ts
 * try {
 *   await loadPolicy("butler.yaml");
 * } catch (error) {
 *   if (error instanceof ConfigError) console.error(error.message);
 * }
 * ```
 */
export class ConfigError extends Error {
  /** The file the issues are in, as given to the loader. */
  readonly file: string;
  /** Every problem found, in file order. */
  readonly issues: readonly ConfigIssue[];

  /** Builds the error; `issues` must not be empty. */
  constructor(file: string, issues: readonly ConfigIssue[]) {
    super(issues.map((issue) => formatConfigIssue(file, issue)).join("\n"));
    this.name = "ConfigError";
    this.file = file;
    this.issues = Object.freeze([...issues]);
  }
}
