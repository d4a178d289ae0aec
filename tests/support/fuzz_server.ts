/**
 * What the fuzz tests that go through the real server share: a config for
 * the client `app` whose models are `llama3.2` (but not `llama3.2:1b`) and
 * `qwen2.5:7b`, the check of a model against it, and sending one case.
 *
 * @module
 */

import { bearer, KEYS } from "./harness.ts";

/**
 * The config for `startStack`: one client `app` with the test key and the
 * model rules above; `extra` is appended as further lines of that client.
 */
export function fuzzConfig(extra = ""): string {
  return `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2", "qwen2.5:7b"]
    deny_models: ["llama3.2:1b"]
${extra}`;
}

/** Whether `fuzzConfig`'s model rules allow a full model name. */
export function allowedModel(full: string): boolean {
  return (full.startsWith("registry.ollama.ai/library/llama3.2:") &&
    full !== "registry.ollama.ai/library/llama3.2:1b") ||
    full === "registry.ollama.ai/library/qwen2.5:7b";
}

/**
 * POSTs `body` to `url + path` as the client `app` (10 s at most), drops
 * the answer's body and returns its status.
 */
export async function sendAsApp(
  url: string,
  options: { path: string; body: string | Uint8Array },
): Promise<number> {
  const response = await fetch(url + options.path, {
    method: "POST",
    headers: { ...bearer(KEYS.app), "content-type": "application/json" },
    body: options.body as string | Uint8Array<ArrayBuffer>,
    signal: AbortSignal.timeout(10_000),
  });
  await response.body?.cancel();
  return response.status;
}
