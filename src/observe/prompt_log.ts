/**
 * With `log_prompts: true`, one log line per request with the texts it sends
 * to the model. Off by default: prompts never reach a log unless asked for.
 *
 * @module
 */

import type { JsonNode } from "../request/go_json.ts";
import { promptTexts } from "../policy/prompt_texts.ts";
import type { Context } from "../runtime.ts";

/** Logs the prompt texts of `body`, a request on `route` (its pattern). */
export function logPrompts(
  body: JsonNode,
  options: { context: Context; route: string },
): void {
  const { trace, shared } = options.context;
  try {
    shared.log.info("prompts", {
      client: trace.identity?.client?.name,
      user: trace.identity?.user,
      model: trace.model,
      route: options.route,
      prompts: promptTexts(options.route, body),
    });
  } catch {
    // The decide step already read these texts; nothing new can fail here.
  }
}
