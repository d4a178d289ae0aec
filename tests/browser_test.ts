/**
 * A real browser through Butler: headless Chromium (Debian's `chromium`,
 * driven by playwright-core) loads a small chat page and streams an answer
 * through Butler with a key. From an origin in `cors.allow_origins` the
 * tokens appear on the page as they arrive; from any other origin the
 * browser blocks the request after Butler's preflight refusal, and nothing
 * reaches Ollama. Screenshots of both go to `tests/artifacts/`.
 */

import assert from "node:assert/strict";
// Dev-only, pinned here rather than in deno.json's imports.
// deno-lint-ignore no-import-prefix
import { chromium } from "npm:playwright-core@1.64.1";
import { KEYS, startStack } from "./support/harness.ts";
import { ignoreWithout } from "./support/system_tools.ts";

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = new URL("./artifacts/", import.meta.url).pathname;

// As root on a machine without a network: no sandbox, no GPU, and none of
// Chromium's own background connections.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** What the page needs to know, filled in once Butler listens. */
interface PageSettings {
  butler: string;
  key: string;
}

/**
 * The chat page: a button that posts to Butler's `/api/chat` and appends
 * each streamed token to `#answer` as it arrives.
 */
function chatPage(settings: PageSettings): string {
  return `<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>Chat through Butler</title>
<style>
  body { font: 18px/1.4 sans-serif; margin: 24px; max-width: 720px; }
  #answer { white-space: pre-wrap; border: 1px solid #888; padding: 12px;
            min-height: 2em; font-size: 22px; }
  #status.done { color: #060; }
  #status.blocked { color: #b00; }
  code { background: #eee; padding: 0 4px; }
</style>
</head>
<body>
<h1>Chat through Butler</h1>
<p>This page: <code id="origin"></code><br>Butler: <code id="butler"></code></p>
<button id="send">Send "hello"</button>
<p>Status: <b id="status">idle</b></p>
<div id="answer"></div>
<script>
const settings = ${JSON.stringify(settings)};
document.getElementById("origin").textContent = location.origin;
document.getElementById("butler").textContent = settings.butler;
const status = document.getElementById("status");
const answer = document.getElementById("answer");

async function send() {
  status.textContent = "streaming";
  try {
    const response = await fetch(settings.butler + "/api/chat", {
      method: "POST",
      headers: {
        authorization: "Bearer " + settings.key,
        "content-type": "application/json",
      },
      body: JSON.stringify({
        model: "llama3.2",
        messages: [{ role: "user", content: "hello" }],
      }),
    });
    if (!response.ok) {
      status.textContent = "refused " + response.status + ": " +
        (await response.json()).error;
      return;
    }
    const reader = response.body.pipeThrough(new TextDecoderStream())
      .getReader();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      let end;
      while ((end = buffered.indexOf("\\n")) >= 0) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        if (line.trim() === "") continue;
        const chunk = JSON.parse(line);
        if (chunk.message && chunk.message.content) {
          answer.textContent += chunk.message.content;
        }
        if (chunk.done) {
          status.textContent = "done";
          status.className = "done";
        }
      }
    }
  } catch (error) {
    status.textContent = "blocked: " + error.name + ": " + error.message;
    status.className = "blocked";
  }
}
document.getElementById("send").addEventListener("click", send);
</script>
</body>
</html>
`;
}

/** Serves the chat page on 127.0.0.1 (any path). */
function servePage(settings: PageSettings): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    () =>
      new Response(chatPage(settings), {
        headers: { "content-type": "text/html; charset=utf-8" },
      }),
  );
}

async function requireChromium(): Promise<void> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `Chromium is not installed at ${CHROMIUM}; this test drives the real ` +
        "browser. Install Debian's package: apt-get install chromium " +
        "(.ci/run does this when it is missing).",
    );
  }
}

// Expressions evaluated in the page (strings: this file is type-checked
// without the DOM library).
const STATUS = `document.getElementById("status").textContent`;
const ANSWER = `document.getElementById("answer").textContent`;

/** Records every DOM state of the page in `globalThis.seen`. */
const RECORD_DOM_STATES = `
  globalThis.seen = [];
  new MutationObserver(() =>
    globalThis.seen.push({ answer: ${ANSWER}, status: ${STATUS} })
  ).observe(document.body, {
    subtree: true,
    childList: true,
    characterData: true,
  });
`;

/** One DOM state seen by a MutationObserver in the page. */
interface Seen {
  readonly answer: string;
  readonly status: string;
}

Deno.test({
  name:
    "browser: a page on an allowed origin streams a chat through Butler; another origin is blocked",
  ignore: ignoreWithout({ "/usr/bin/chromium": "chromium" }),
  // playwright keeps its connection to the browser process in the
  // background; the browser is closed in `finally`.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await requireChromium();
    await Deno.mkdir(ARTIFACTS, { recursive: true });

    const settings: PageSettings = { butler: "", key: KEYS.app };
    const allowedPage = servePage(settings);
    const otherPage = servePage(settings);
    // Another origin for the same page: another host name and port.
    const allowedOrigin = `http://127.0.0.1:${allowedPage.addr.port}`;
    const otherOrigin = `http://localhost:${otherPage.addr.port}`;

    const stack = await startStack(
      `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
cors:
  allow_origins: ["${allowedOrigin}"]
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2"]
`,
      { sim: { chunkDelayMs: 150, chunks: 8 } },
    );
    settings.butler = stack.url;
    const userDataDir = await Deno.makeTempDir({ prefix: "butler-chromium-" });
    const browser = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 800, height: 480 },
    });
    try {
      // 1. Allowed origin: the answer grows on the page while it streams.
      const page = await browser.newPage();
      await page.goto(allowedOrigin + "/");
      await page.evaluate(RECORD_DOM_STATES);
      await page.click("#send");
      await page.waitForFunction(
        `${STATUS} === "streaming" && ${ANSWER}.length > 0`,
      );
      const streamingShot = `${ARTIFACTS}browser_allowed_streaming.png`;
      await page.screenshot({ path: streamingShot });
      await page.waitForFunction(`${STATUS} === "done"`);
      const allowedShot = `${ARTIFACTS}browser_allowed_done.png`;
      await page.screenshot({ path: allowedShot });

      const seen: Seen[] = await page.evaluate("globalThis.seen");
      const whileStreaming = [
        ...new Set(
          seen.filter((s) => s.status === "streaming" && s.answer !== "")
            .map((s) => s.answer),
        ),
      ];
      assert.ok(
        whileStreaming.length >= 3,
        `the answer grew in steps before done: ${
          JSON.stringify(whileStreaming)
        }`,
      );
      for (let i = 1; i < whileStreaming.length; i++) {
        assert.ok(whileStreaming[i].startsWith(whileStreaming[i - 1]));
        assert.ok(whileStreaming[i].length > whileStreaming[i - 1].length);
      }
      const finalAnswer = await page.textContent("#answer");
      assert.ok(finalAnswer!.startsWith(whileStreaming.at(-1)!));
      assert.equal(stack.sim.records.length, 1);
      assert.equal(stack.sim.records[0].path, "/api/chat");
      assert.equal(stack.sim.records[0].headers.origin, undefined);

      // 2. Another origin: Butler refuses the preflight, the browser blocks.
      const other = await browser.newPage();
      const consoleErrors: string[] = [];
      other.on("console", (message) => {
        if (message.type() === "error") consoleErrors.push(message.text());
      });
      await other.goto(otherOrigin + "/");
      await other.click("#send");
      await other.waitForFunction(`${STATUS}.startsWith("blocked")`);
      const blockedShot = `${ARTIFACTS}browser_blocked.png`;
      await other.screenshot({ path: blockedShot });
      assert.equal(
        await other.textContent("#status"),
        "blocked: TypeError: Failed to fetch",
      );
      assert.equal(await other.textContent("#answer"), "");
      assert.ok(
        consoleErrors.some((text) => /blocked by CORS policy/.test(text)),
        `Chromium names CORS: ${JSON.stringify(consoleErrors)}`,
      );
      assert.equal(stack.sim.records.length, 1, "nothing more reached Ollama");
      const refused = stack.logs.filter((line) =>
        line.reason === "cors_origin_not_allowed"
      );
      assert.equal(refused.length, 1);
      assert.equal(refused[0].origin, otherOrigin);

      console.log(
        `screenshots:\n  ${streamingShot}\n  ${allowedShot}\n  ${blockedShot}`,
      );
    } finally {
      await browser.close();
      await stack.close();
      await allowedPage.shutdown();
      await otherPage.shutdown();
      await Deno.remove(userDataDir, { recursive: true });
    }
  },
});
