/**
 * The policy fields shared by clients, users, `role_policies` and
 * `user_overrides`: which models, how fast, how big, which prompts.
 *
 * @module
 */

import { parseDuration } from "./duration.ts";
import {
  childPath,
  describeValue,
  type FieldReader,
  integerValue,
  type IssueCollector,
} from "./fields.ts";
import { compilePromptPattern } from "./patterns.ts";
import { compileModelPattern } from "../models/match.ts";
import { ModelRefError } from "../models/resolve.ts";
import type { CapMode, PromptPattern, SubjectPolicy } from "./policy.ts";
import { parseRate } from "./rate.ts";

/** Field names every subject accepts. */
export const SUBJECT_FIELDS: readonly string[] = [
  "allow_models",
  "deny_models",
  "rate_limit",
  "max_request_bytes",
  "max_ctx",
  "max_predict",
  "max_concurrent",
  "max_tokens_per_day",
  "max_keep_alive",
  "deny_prompt_patterns",
  "cap_mode",
  "allow_context",
  "allow_management",
];

const CAP_MODES: readonly CapMode[] = ["refuse", "clamp"];

/** Reads the subject fields of one map; its field path becomes `origin`. */
export function readSubjectPolicy(
  fields: FieldReader,
  issues: IssueCollector,
): SubjectPolicy {
  const rate = fields.parsed("rate_limit", parseRate);
  const capMode = fields.string("cap_mode") ?? "refuse";
  if (!(CAP_MODES as readonly string[]).includes(capMode)) {
    fields.report(
      "cap_mode",
      `${JSON.stringify(capMode)} is not a cap mode; write "refuse" or "clamp"`,
    );
  }

  return {
    origin: fields.path,
    allowModels: readModelPatterns(fields, "allow_models", issues),
    denyModels: readModelPatterns(fields, "deny_models", issues),
    rateLimit: rate === "unlimited" ? undefined : rate,
    maxRequestBytes: limit(fields.integer("max_request_bytes")),
    maxCtx: limit(fields.integer("max_ctx")),
    maxPredict: limit(fields.integer("max_predict")),
    maxConcurrent: limit(fields.integer("max_concurrent")),
    maxKeepAliveSeconds: limit(readKeepAlive(fields)),
    maxTokensPerDay: limit(fields.integer("max_tokens_per_day")),
    denyPromptPatterns: readPromptPatterns(fields, issues),
    capMode: capMode === "clamp" ? "clamp" : "refuse",
    allowContext: fields.boolean("allow_context", false),
    allowManagement: fields.boolean("allow_management", false),
  };
}

/** The Go Butler's `0` means "no limit". */
function limit(value: number | undefined): number | undefined {
  return value === 0 ? undefined : value;
}

function readModelPatterns(
  fields: FieldReader,
  name: string,
  issues: IssueCollector,
): string[] {
  const patterns: string[] = [];
  for (const { value, index } of fields.stringList(name)) {
    const pattern = value.trim();
    try {
      // The same compiler the request path uses, so a pattern that could
      // never match (or would refuse every request) stops startup instead.
      compileModelPattern(pattern);
      patterns.push(pattern);
    } catch (error) {
      if (!(error instanceof ModelRefError)) throw error;
      issues.add(
        childPath(fields.pathOf(name), index),
        lineOfItem(fields, name, index),
        `${JSON.stringify(value)} is not a model pattern: ${error.message}`,
      );
    }
  }
  return patterns;
}

function readPromptPatterns(
  fields: FieldReader,
  issues: IssueCollector,
): PromptPattern[] {
  const name = "deny_prompt_patterns";
  const patterns: PromptPattern[] = [];
  for (const { value, index } of fields.stringList(name)) {
    try {
      patterns.push(compilePromptPattern(value, index));
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      issues.add(
        childPath(fields.pathOf(name), index),
        lineOfItem(fields, name, index),
        error.message,
      );
    }
  }
  return patterns;
}

/** `max_keep_alive`: a duration (`30m`) or an integer number of seconds. */
function readKeepAlive(fields: FieldReader): number | undefined {
  const node = fields.node("max_keep_alive");
  if (node === undefined) return undefined;

  const seconds = integerValue(node);
  if (seconds !== undefined && seconds >= 0) return seconds;

  if (node.kind === "scalar" && typeof node.value === "string") {
    try {
      const ms = parseDuration(node.value);
      if (ms % 1000 === 0) return ms / 1000;
      fields.report(
        "max_keep_alive",
        `${JSON.stringify(node.value)} is not a whole number of seconds`,
      );
      return undefined;
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      fields.report("max_keep_alive", error.message);
      return undefined;
    }
  }

  fields.report(
    "max_keep_alive",
    `expected a duration like "30m" or a non-negative number of seconds, ` +
      `got ${describeValue(node)}`,
  );
  return undefined;
}

function lineOfItem(fields: FieldReader, name: string, index: number): number {
  const list = fields.node(name);
  return list?.kind === "list" ? list.items[index].line : fields.lineOf(name);
}
