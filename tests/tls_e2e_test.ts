/**
 * TLS over real sockets: Butler serving HTTPS with a self-signed certificate
 * made here with the `openssl` command, HTTP/2 negotiated by ALPN, the
 * permission flags naming exactly the certificate and key, and the
 * `healthcheck` command probing a TLS listener.
 */

import assert from "node:assert/strict";
import { bearer, KEYS, startStack, writeConfig } from "./support/harness.ts";
import { startOllamaSim } from "./sim/ollama_sim.ts";
import { freePort, runDeno, spawnDeno } from "./support/butler_process.ts";
import { ignoreWithout } from "./support/system_tools.ts";

interface Certificate {
  readonly certPath: string;
  readonly keyPath: string;
  /** The certificate, PEM. */
  readonly cert: string;
}

/**
 * A self-signed P-256 certificate for `names` (subjectAltName entries such
 * as `DNS:localhost`, `IP:127.0.0.1`), valid for a day. `ca` keeps
 * openssl's default `CA:TRUE`; otherwise it is marked an end entity.
 */
async function makeCertificate(
  names: string[],
  options: { ca?: boolean } = {},
): Promise<Certificate> {
  const dir = await Deno.makeTempDir({ prefix: "butler-tls-" });
  const certPath = `${dir}/cert.pem`;
  const keyPath = `${dir}/key.pem`;
  const args = [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=butler test",
    "-keyout",
    keyPath,
    "-out",
    certPath,
    "-addext",
    `subjectAltName=${names.join(",")}`,
    ...(options.ca ? [] : ["-addext", "basicConstraints=critical,CA:FALSE"]),
  ];
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("openssl", { args, stdin: "null" })
      .output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        "the openssl command is not installed; this test makes its " +
          "certificate with it (Debian package openssl)",
      );
    }
    throw error;
  }
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  return { certPath, keyPath, cert: await Deno.readTextFile(certPath) };
}

function tlsConfig(certificate: Certificate): string {
  return `
listen: 127.0.0.1:0
upstream: {{UPSTREAM}}
tls:
  cert: ${certificate.certPath}
  key: ${certificate.keyPath}
clients:
  - name: app
    key: ${KEYS.app}
    allow_models: ["llama3.2"]
`;
}

const CHAT = JSON.stringify({
  model: "llama3.2",
  messages: [{ role: "user", content: "hello" }],
});

function ndjsonLines(text: string): Record<string, unknown>[] {
  return text.trim().split("\n").map((line) => JSON.parse(line));
}

Deno.test({
  name: "HTTPS: a chat streams over TLS with a self-signed certificate",
  ignore: ignoreWithout({ openssl: "openssl" }),
}, async () => {
  const certificate = await makeCertificate(["DNS:localhost", "IP:127.0.0.1"]);
  const stack = await startStack(tlsConfig(certificate));
  const client = Deno.createHttpClient({ caCerts: [certificate.cert] });
  try {
    const port = stack.butler.addr.port;
    for (const host of ["127.0.0.1", "localhost"]) {
      const response = await fetch(`https://${host}:${port}/api/chat`, {
        method: "POST",
        headers: { "content-type": "application/json", ...bearer(KEYS.app) },
        body: CHAT,
        client,
      });
      assert.equal(response.status, 200);
      const lines = ndjsonLines(await response.text());
      assert.ok(lines.length > 2, "several chunks");
      assert.equal(lines.at(-1)!.done, true);
    }
    assert.equal(stack.sim.records.length, 2);
    assert.equal(stack.sim.records[0].path, "/api/chat");
    assert.ok(
      stack.logs.some((line) => line.msg === "listening" && line.tls === true),
    );
  } finally {
    client.close();
    await stack.close();
  }
});

Deno.test({
  name: "HTTPS: a refusal over TLS answers and nothing reaches Ollama",
  ignore: ignoreWithout({ openssl: "openssl" }),
}, async () => {
  const certificate = await makeCertificate(["IP:127.0.0.1"]);
  const stack = await startStack(tlsConfig(certificate));
  const client = Deno.createHttpClient({ caCerts: [certificate.cert] });
  try {
    const base = `https://127.0.0.1:${stack.butler.addr.port}`;
    const wrongKey = await fetch(`${base}/api/chat`, {
      method: "POST",
      headers: { "content-type": "application/json", ...bearer("not-a-key") },
      body: CHAT,
      client,
    });
    assert.equal(wrongKey.status, 401);
    await wrongKey.body?.cancel();

    const deniedModel = await fetch(`${base}/api/chat`, {
      method: "POST",
      headers: { "content-type": "application/json", ...bearer(KEYS.app) },
      body: JSON.stringify({ model: "mistral", messages: [] }),
      client,
    });
    assert.equal(deniedModel.status, 403);
    await deniedModel.body?.cancel();

    assert.equal(stack.sim.records.length, 0);
  } finally {
    client.close();
    await stack.close();
  }
});

Deno.test({
  name: "HTTPS: plain HTTP on the TLS port gets no answer and is not forwarded",
  ignore: ignoreWithout({ openssl: "openssl" }),
}, async () => {
  const certificate = await makeCertificate(["IP:127.0.0.1"]);
  const stack = await startStack(tlsConfig(certificate));
  try {
    await assert.rejects(
      fetch(`http://127.0.0.1:${stack.butler.addr.port}/api/chat`, {
        method: "POST",
        headers: { "content-type": "application/json", ...bearer(KEYS.app) },
        body: CHAT,
      }),
    );
    // An HTTPS client that does not trust the certificate stops too.
    await assert.rejects(
      fetch(`https://127.0.0.1:${stack.butler.addr.port}/api/version`),
      (error: Error) => {
        assert.match(String(error.cause), /UnknownIssuer/);
        return true;
      },
    );
    assert.equal(stack.sim.records.length, 0);
  } finally {
    await stack.close();
  }
});

Deno.test({
  name: "HTTP/2: ALPN offers h2 and http/1.1 on the TLS listener",
  ignore: ignoreWithout({ openssl: "openssl" }),
}, async () => {
  const certificate = await makeCertificate(["IP:127.0.0.1"]);
  const stack = await startStack(tlsConfig(certificate));
  try {
    const negotiated = async (alpnProtocols: string[]) => {
      const conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port: stack.butler.addr.port,
        caCerts: [certificate.cert],
        alpnProtocols,
      });
      const { alpnProtocol } = await conn.handshake();
      conn.close();
      return alpnProtocol;
    };
    assert.equal(await negotiated(["h2", "http/1.1"]), "h2");
    assert.equal(await negotiated(["http/1.1"]), "http/1.1");
  } finally {
    await stack.close();
  }
});

Deno.test({
  name: "HTTP/2: a chat streams over h2 to curl and to an h2-only Deno client",
  ignore: ignoreWithout({ openssl: "openssl", curl: "curl" }),
}, async () => {
  const certificate = await makeCertificate(["IP:127.0.0.1"]);
  const stack = await startStack(tlsConfig(certificate));
  const client = Deno.createHttpClient({
    caCerts: [certificate.cert],
    http1: false,
    http2: true,
  });
  try {
    const url = `https://127.0.0.1:${stack.butler.addr.port}/api/chat`;
    let curl: Deno.CommandOutput;
    try {
      curl = await new Deno.Command("curl", {
        args: [
          "--silent",
          "--show-error",
          "--http2",
          "--cacert",
          certificate.certPath,
          "--header",
          `authorization: Bearer ${KEYS.app}`,
          "--header",
          "content-type: application/json",
          "--data",
          CHAT,
          "--write-out",
          "\nhttp_version=%{http_version} status=%{http_code}",
          url,
        ],
        stdin: "null",
      }).output();
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new Error(
          "curl is not installed; this test checks the negotiated HTTP " +
            "version with it (Debian package curl)",
        );
      }
      throw error;
    }
    const out = new TextDecoder().decode(curl.stdout);
    assert.equal(curl.code, 0, new TextDecoder().decode(curl.stderr));
    assert.match(out, /\nhttp_version=2 status=200$/);
    const lines = ndjsonLines(out.slice(0, out.lastIndexOf("\nhttp_version")));
    assert.equal(lines.at(-1)!.done, true);

    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...bearer(KEYS.app) },
      body: CHAT,
      client,
    });
    assert.equal(response.status, 200);
    const reader = response.body!.pipeThrough(new TextDecoderStream())
      .getReader();
    let chunks = 0;
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      chunks++;
      text += value;
    }
    assert.ok(chunks > 1, "the answer arrived in several reads");
    assert.equal(ndjsonLines(text).at(-1)!.done, true);
    assert.equal(stack.sim.records.length, 2);
  } finally {
    client.close();
    await stack.close();
  }
});

/** Starts `deno <args>` and resolves once it logged `listening`. */
async function startServing(
  args: string[],
  env: Record<string, string>,
): Promise<{ stop(): Promise<string> }> {
  const child = spawnDeno(args, env);
  const stderr = new Response(child.stderr).text();
  let seen = "";
  const reader = child.stdout.pipeThrough(new TextDecoderStream())
    .getReader();
  const deadline = Date.now() + 15_000;
  while (!seen.includes('"msg":"listening"') && Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += value;
  }
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    await child.status;
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    return seen;
  };
  if (!seen.includes('"msg":"listening"')) {
    await stop();
    assert.fail(`Butler did not start:\n${seen}\n${await stderr}`);
  }
  return { stop };
}

Deno.test({
  name:
    "permissions: the flags name the certificate and key; Butler serves TLS and passes its healthcheck under them",
  ignore: ignoreWithout({ openssl: "openssl" }),
}, async () => {
  // A certificate for the name clients use, not for the listen address: the
  // healthcheck checks the chain, not the name.
  const certificate = await makeCertificate(["DNS:butler.example.test"]);
  const sim = await startOllamaSim({ chunkDelayMs: 1 });
  const port = freePort();
  const configPath = await writeConfig(`
listen: 127.0.0.1:${port}
upstream: ${sim.url}
tls:
  cert: ${certificate.certPath}
  key: ${certificate.keyPath}
clients:
  - name: app
    key: \${TLS_TEST_KEY}
    allow_models: ["*"]
`);
  const env = { TLS_TEST_KEY: KEYS.app };
  try {
    const printed = await runDeno(
      ["run", "-A", "main.ts", "permissions", "--config", configPath],
      env,
    );
    assert.equal(printed.code, 0, printed.stderr);
    const words = printed.stdout.split("\n")[0].split(" ");
    const flags = words.slice(2, words.indexOf("main.ts"));
    assert.ok(
      flags.includes(
        `--allow-read=${configPath},${certificate.certPath},${certificate.keyPath}`,
      ),
      flags.join(" "),
    );

    const butler = await startServing(
      ["run", ...flags, "main.ts", "--config", configPath],
      env,
    );
    try {
      const health = await runDeno(
        ["run", ...flags, "main.ts", "healthcheck", "--config", configPath],
        env,
      );
      assert.equal(health.code, 0, health.stderr);
      assert.equal(health.stderr, "");
    } finally {
      const log = await butler.stop();
      assert.match(log, /"tls":true/);
    }

    const down = await runDeno(
      ["run", ...flags, "main.ts", "healthcheck", "--config", configPath],
      env,
    );
    assert.equal(down.code, 1);
    assert.match(down.stderr, /^healthcheck: .*refused/i);
  } finally {
    await sim.close();
  }
});

Deno.test({
  name:
    "healthcheck: a certificate marked CA:TRUE is refused as a server certificate, and says so",
  ignore: ignoreWithout({ openssl: "openssl" }),
}, async () => {
  // openssl's default for `req -x509`; rustls (Deno's TLS) refuses it as an
  // end-entity certificate, so the README says to add CA:FALSE.
  const certificate = await makeCertificate(["IP:127.0.0.1"], { ca: true });
  const stack = await startStack(tlsConfig(certificate));
  try {
    const configPath = await writeConfig(
      tlsConfig(certificate)
        .replace("127.0.0.1:0", `127.0.0.1:${stack.butler.addr.port}`)
        .replace("{{UPSTREAM}}", stack.sim.url),
    );
    const health = await runDeno(
      ["run", "-A", "main.ts", "healthcheck", "--config", configPath],
    );
    assert.equal(health.code, 1);
    assert.match(health.stderr, /CaUsedAsEndEntity/);
  } finally {
    await stack.close();
  }
});
