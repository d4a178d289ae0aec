/**
 * The decision on one request: which models it names, whether every subject
 * may use them, what caps and rewrites apply, and whether any text it sends
 * to the model is forbidden. It reads the body exactly as Ollama will and
 * touches no network. Everything after this step forwards; nothing after it
 * refuses for a policy reason.
 *
 * @module
 */

import type { SubjectPolicy } from "../config/policy.ts";
import { type Refusal, refuse } from "../errors/refusal.ts";
import type { Identity } from "../auth/identity.ts";
import type { RouteMatch } from "../routes/table.ts";
import type { JsonNode } from "../request/go_json.ts";
import {
  FieldConflictError,
  FieldSpellingError,
  FieldTypeError,
  getBool,
  getString,
} from "../request/go_fields.ts";
import {
  type ModelRef,
  ModelRefError,
  resolveModelRef,
} from "../models/resolve.ts";
import {
  compileModelPattern,
  decideModel,
  type ModelPattern,
} from "../models/match.ts";
import { applyCaps } from "./caps.ts";
import { applyKeepAlive } from "./keep_alive.ts";
import { checkPrompts } from "./prompt_filter.ts";
import { minDefinedLimit } from "./limits.ts";
import { applyBudgetCap } from "./budget_cap.ts";
import { requestStreamUsage } from "../forward/usage_request.ts";

/** What the forward step needs from the decision. */
export interface Decision {
  /** Every model reference, resolved, in route-table order. */
  readonly models: readonly ModelRef[];
  /** The body to forward when Butler rewrote it; undefined: forward as read. */
  readonly rewrittenBody?: JsonNode;
  /** The response streams (NDJSON or SSE). */
  readonly stream: boolean;
  /** Generation cap in force, for the stream guard; undefined: none. */
  readonly generationCap?: number;
  /**
   * Tokens to reserve from the request's budgets: the generation limit the
   * forwarded body carries. Set only when a budget applied.
   */
  readonly budgetReservation?: number;
  /**
   * Butler asked Ollama for stream usage the client did not ask for; the
   * usage must be removed from the stream (`usage_strip.ts`).
   */
  readonly stripUsage?: boolean;
}

/** Options of {@linkcode decide}. */
export interface DecideOptions {
  /**
   * Tokens left of the request's daily budgets (the smallest remainder);
   * undefined: no budget applies. Lowers the generation cap of generating
   * routes, always by clamping.
   */
  budgetRemaining?: number;
}

/** The request as read by the body step. */
export interface ReadRequest {
  readonly match: RouteMatch;
  /** Parsed JSON body for routes that read one. */
  readonly body?: JsonNode;
  /** Model named by a multipart form (transcriptions). */
  readonly formModel?: string;
  /** Form fields that reach the model's prompt (transcription `prompt`). */
  readonly formTexts?: readonly string[];
}

const compiledPatterns = new WeakMap<
  SubjectPolicy,
  { allow: ModelPattern[]; deny: ModelPattern[] }
>();

/** The compiled allow and deny patterns of a policy, compiled once. */
function modelRules(policy: SubjectPolicy) {
  let rules = compiledPatterns.get(policy);
  if (rules === undefined) {
    rules = {
      allow: policy.allowModels.map((text) => compileModelPattern(text)),
      deny: policy.denyModels.map((text) => compileModelPattern(text)),
    };
    compiledPatterns.set(policy, rules);
  }
  return rules;
}

/** True when every policy allows the model (listings use this too). */
export function modelAllowedForAll(
  ref: ModelRef,
  policies: readonly SubjectPolicy[],
): boolean {
  return policies.every((policy) =>
    decideModel(ref, modelRules(policy)).allowed
  );
}

/**
 * Decides on a request for an identity. Returns the decision, or the
 * refusal to send in the route's dialect.
 */
export function decide(
  request: ReadRequest,
  identity: Identity,
  options: DecideOptions = {},
): Decision | Refusal {
  try {
    return decideOrThrow(request, identity, options);
  } catch (error) {
    if (error instanceof FieldConflictError) {
      return refuse(400, "conflicting_fields", error.message);
    }
    if (error instanceof FieldSpellingError) {
      return refuse(400, "ambiguous_field_name", error.message);
    }
    if (error instanceof FieldTypeError) {
      return refuse(400, "bad_field_type", error.message);
    }
    if (error instanceof ModelRefError) {
      return refuse(400, "bad_model_name", error.message);
    }
    throw error;
  }
}

function decideOrThrow(
  request: ReadRequest,
  identity: Identity,
  options: DecideOptions,
): Decision | Refusal {
  const { route } = request.match;
  const policies = identity.subjects.map((subject) => subject.policy);

  // 1. Every model the request names, resolved the way Ollama resolves it.
  const models: ModelRef[] = [];
  for (const field of route.modelFields) {
    const text = modelFieldText(request, field);
    if (text === undefined || text.trim() === "") {
      if (!field.required) continue;
      return refuse(400, "model_missing", `${field.name} is required`);
    }
    models.push(resolveModelRef(text));
  }

  // 2. Every subject may use every model; model details of a model the
  // caller may not use answer as if it did not exist.
  for (const ref of models) {
    for (const { key, policy } of identity.subjects) {
      const verdict = decideModel(ref, modelRules(policy));
      if (verdict.allowed) continue;
      if (route.kind === "show" || route.kind === "model_detail") {
        return refuse(404, "model_hidden", `model '${ref.display}' not found`);
      }
      return refuse(
        403,
        verdict.reason === "cloud_not_explicit"
          ? "cloud_model_denied"
          : "model_denied",
        `model '${ref.display}' is not allowed for this ${
          key.startsWith("client:") ? "client" : "user"
        }`,
        { detail: { model: ref.display, rule: verdict.reason } },
      );
    }
  }

  // 3. Model management needs an explicit permission.
  if (
    route.kind === "manage" && !policies.every((p) => p.allowManagement)
  ) {
    return refuse(
      403,
      "management_denied",
      `${route.pattern} needs the allow_management permission`,
    );
  }

  const body = request.body;
  if (body === undefined) {
    const prompt = checkPrompts(undefined, {
      route: route.pattern,
      policies,
      formTexts: request.formTexts,
    });
    if (prompt !== undefined) return prompt;
    return { models, stream: false };
  }
  // A model created with `remote_host` sends its prompts to that host under
  // a local-looking name, which no model rule could then tell apart.
  if (route.pattern === "/api/create") {
    const remote = getString(body, "remote_host");
    if (remote !== undefined && remote.trim() !== "") {
      return refuse(
        403,
        "remote_model_denied",
        "creating a model that forwards to a remote host (remote_host) is not allowed through Butler",
      );
    }
  }

  let rewritten: JsonNode | undefined;
  const current = () => rewritten ?? body;

  // 4. Generation and context caps.
  let generationCap: number | undefined;
  if (route.capField !== undefined) {
    const limits = effectiveCaps(policies);
    const caps = applyCaps(current(), { capField: route.capField, limits });
    if (caps.kind === "refused") {
      return refuse(400, "cap_exceeded", caps.message, {
        detail: { field: caps.field, cap: caps.cap },
      });
    }
    if (caps.kind === "rewritten") rewritten = caps.body;
    generationCap = limits.maxPredict;
  }

  // 4b. The day's token budget: generation stops at what is left of it.
  let budgetReservation: number | undefined;
  if (
    route.capField !== undefined && route.kind === "generate" &&
    options.budgetRemaining !== undefined
  ) {
    const budget = applyBudgetCap(current(), {
      capField: route.capField,
      remaining: options.budgetRemaining,
    });
    if (budget.body !== undefined) rewritten = budget.body;
    budgetReservation = budget.limit;
    generationCap = budget.limit;
  }

  // 5. How long the model stays loaded.
  if (
    route.dialect === "native" && (route.kind === "generate" ||
      route.kind === "embed")
  ) {
    const keepAlive = applyKeepAlive(current(), {
      maxKeepAliveSeconds: minDefinedLimit(
        policies.map((p) => p.maxKeepAliveSeconds),
      ),
      capMode: policies.some((p) => p.capMode === "refuse")
        ? "refuse"
        : "clamp",
      allowManagement: policies.every((p) => p.allowManagement),
    });
    if (keepAlive.kind === "refused") {
      return refuse(
        keepAlive.reason === "unload_needs_management" ? 403 : 400,
        keepAlive.reason,
        keepAlive.message,
      );
    }
    if (keepAlive.kind === "rewritten") rewritten = keepAlive.body;
  }

  // 6. Prompt filters over every text that reaches the model.
  const prompt = checkPrompts(body, { route: route.pattern, policies });
  if (prompt !== undefined) return prompt;

  // 7. Usage on OpenAI-style streams, for the token accounting.
  const stream = getBool(body, "stream") ?? route.streamsByDefault;
  const usage = requestStreamUsage(current(), { route: route.pattern, stream });
  if (usage.kind === "rewritten") rewritten = usage.body;

  return {
    models,
    rewrittenBody: rewritten,
    stream,
    generationCap,
    budgetReservation,
    stripUsage: usage.kind === "rewritten",
  };
}

function modelFieldText(
  request: ReadRequest,
  field: RouteMatch["route"]["modelFields"][number],
): string | undefined {
  switch (field.from) {
    case "path":
      return request.match.params[field.name];
    case "form":
      return request.formModel;
    case "json": {
      if (request.body === undefined) return undefined;
      const value = getString(request.body, field.name);
      if ((value === undefined || value === "") && field.fallback) {
        return getString(request.body, field.fallback);
      }
      return value;
    }
  }
}

/** The tightest caps across every policy the request must pass. */
function effectiveCaps(policies: readonly SubjectPolicy[]) {
  return {
    maxPredict: minDefinedLimit(policies.map((p) => p.maxPredict)),
    maxCtx: minDefinedLimit(policies.map((p) => p.maxCtx)),
    capMode: policies.some((p) => p.capMode === "refuse")
      ? "refuse" as const
      : "clamp" as const,
  };
}
