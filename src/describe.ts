/**
 * `check`'s report: what each client, user and role may do, in words.
 * Never prints a key, a digest or a hash.
 *
 * @module
 */

import type { Policy, SubjectPolicy } from "./config/policy.ts";

function limits(policy: SubjectPolicy): string[] {
  const lines: string[] = [];
  const list = (items: readonly string[]) =>
    items.length === 0 ? "none" : items.join(", ");
  lines.push(`models allowed: ${list(policy.allowModels)}`);
  if (policy.denyModels.length > 0) {
    lines.push(`models denied: ${list(policy.denyModels)}`);
  }
  const numbers: [string, number | undefined][] = [
    ["max_request_bytes", policy.maxRequestBytes],
    ["max_ctx", policy.maxCtx],
    ["max_predict", policy.maxPredict],
    ["max_concurrent", policy.maxConcurrent],
    ["max_keep_alive (s)", policy.maxKeepAliveSeconds],
    ["max_tokens_per_day", policy.maxTokensPerDay],
  ];
  lines.push(`rate limit: ${policy.rateLimit?.text ?? "none"}`);
  for (const [name, value] of numbers) {
    if (value !== undefined) lines.push(`${name}: ${value}`);
  }
  if (policy.maxPredict !== undefined || policy.maxCtx !== undefined) {
    lines.push(`over a cap: ${policy.capMode}`);
  }
  if (policy.denyPromptPatterns.length > 0) {
    lines.push(`prompt patterns: ${policy.denyPromptPatterns.length}`);
  }
  if (policy.allowManagement) {
    lines.push("may manage models (pull, push, create, copy, delete)");
  }
  if (policy.allowContext) lines.push("may send pre-tokenized context");
  return lines;
}

/**
 * A name as printed: as it is, or quoted as JSON when it has control
 * characters or edge spaces, so a name cannot forge or break report lines.
 */
function shownName(name: string): string {
  // \p{Cc}: C0 and C1 controls (CR, LF, tab, …).
  return /\p{Cc}|[\u2028\u2029]|^\s|\s$/u.test(name)
    ? JSON.stringify(name)
    : name;
}

function block(title: string, lines: readonly string[]): string {
  return [title, ...lines.map((line) => `  ${line}`)].join("\n");
}

/** A human-readable summary of `policy`. */
export function describePolicy(policy: Policy): string {
  const out: string[] = [
    `config ${policy.configPath} is valid`,
    ...policy.warnings.map((warning) => `warning: ${warning}`),
    `listen ${policy.listen.hostname}:${policy.listen.port}, upstream ${policy.upstream.origin}, auth ${policy.auth.mode}`,
  ];
  if (policy.globalRateLimit) {
    out.push(`global rate limit: ${policy.globalRateLimit.text}`);
  }
  for (const client of policy.clients) {
    const extra = client.requireUserAuth
      ? ["needs a user token as well (require_user_auth)"]
      : [];
    out.push(
      block(`client ${shownName(client.name)}:`, [...limits(client), ...extra]),
    );
  }
  for (const user of policy.users) {
    out.push(block(`user ${shownName(user.name)}:`, limits(user)));
  }
  for (const [role, rolePolicy] of policy.rolePolicies) {
    out.push(block(`role ${shownName(role)}:`, limits(rolePolicy)));
  }
  for (const [user, override] of policy.userOverrides) {
    out.push(block(`user override ${shownName(user)}:`, limits(override)));
  }
  return out.join("\n");
}
