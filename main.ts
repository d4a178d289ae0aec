/**
 * Butler's command line.
 *
 *   main.ts [--config butler.yaml]               serve
 *   main.ts check [--config butler.yaml]         validate, print what each client may do
 *   main.ts gen-key                              print a new key and its key_sha256
 *   main.ts hash-password < password             print a bcrypt hash
 *   main.ts permissions [--config butler.yaml]   print the exact Deno flags the config needs
 *   main.ts healthcheck [--config butler.yaml]   exit 0 when /healthz answers 200
 *
 * @module
 */

import { loadPolicy } from "./src/config/load.ts";
import { ConfigError } from "./src/config/errors.ts";
import { startButler, StartupError } from "./src/serve.ts";
import { StateFileError } from "./src/policy/budget_store.ts";
import { describePolicy } from "./src/describe.ts";
import { probeHealth } from "./src/observe/healthcheck.ts";
import { generateKey } from "./src/auth/gen_key.ts";
import { hashPassword } from "./src/auth/password.ts";
import {
  permissionFlags,
  requiredPermissions,
  RUNTIME_FLAGS,
} from "./src/permissions.ts";
import { VERSION } from "./src/version.ts";

const USAGE = `Butler ${VERSION}: an access-control gateway in front of Ollama.

usage: butler [command] [--config <path>]

commands:
  serve           (default) serve with the config
  check           validate the config and print what each client may do
  gen-key         print a new random API key and its key_sha256
  hash-password   read a password on standard input, print its bcrypt hash
  permissions     print the exact deno run / deno compile flags the config needs
  healthcheck     exit 0 when this Butler's /healthz answers 200 (for containers)

options:
  --config <path> the config file (default ./butler.yaml)
  --help, --version`;

const COMMANDS = new Set([
  "serve",
  "check",
  "gen-key",
  "hash-password",
  "permissions",
  "healthcheck",
]);

interface Args {
  command: string;
  config: string;
}

/**
 * Reads the command and `--config`. The command may stand anywhere, and a
 * later `--config` wins over an earlier one: a compiled binary has its baked
 * arguments first, and the operator's must still take effect.
 */
function parseArgs(argv: readonly string[]): Args | string {
  let command: string | undefined;
  let config = "./butler.yaml";
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--config" || arg === "-config") {
      const value = argv[++i];
      if (value === undefined) return "--config needs a path";
      config = value;
    } else if (arg.startsWith("--config=")) {
      config = arg.slice("--config=".length);
    } else if (COMMANDS.has(arg) && command === undefined) {
      command = arg;
    } else {
      return `unknown argument ${JSON.stringify(arg)}`;
    }
  }
  return { command: command ?? "serve", config };
}

async function readStdin(): Promise<string> {
  const text = await new Response(Deno.stdin.readable).text();
  return text.replace(/\r?\n$/, "");
}

async function run(args: Args): Promise<number> {
  switch (args.command) {
    case "gen-key": {
      const { key, sha256 } = await generateKey();
      console.log(`key:        ${key}`);
      console.log(`key_sha256: ${sha256}`);
      return 0;
    }
    case "hash-password": {
      const password = await readStdin();
      if (password.length === 0) {
        console.error("hash-password: no password on standard input");
        return 2;
      }
      console.log(await hashPassword(password));
      return 0;
    }
    case "check": {
      const policy = await loadPolicy(args.config);
      console.log(describePolicy(policy));
      return 0;
    }
    case "permissions": {
      // Only the names of the variables matter here, not their values: an
      // operator should not need the production secrets in a shell to get
      // the flags. Unset ones get a stand-in that passes validation.
      const policy = await loadPolicy(args.config, { env: orStandIn });
      const flags = [
        ...permissionFlags(requiredPermissions(policy)),
        ...RUNTIME_FLAGS,
      ].join(" ");
      console.log(`deno run ${flags} main.ts --config ${args.config}`);
      // Only the npm packages main.ts imports go into the binary, not the
      // test tools in the lockfile.
      console.log(
        `deno compile ${flags} --exclude-unused-npm --output butler main.ts ` +
          `--config ${args.config}`,
      );
      return 0;
    }
    case "healthcheck": {
      const result = await probeHealth(await loadPolicy(args.config));
      if ("error" in result) console.error(`healthcheck: ${result.error}`);
      else if (result.status !== 200) {
        // Container health logs show this line: say why it is unhealthy.
        console.error(`healthcheck: /healthz answered ${result.status}`);
      }
      return "status" in result && result.status === 200 ? 0 : 1;
    }
    default: {
      const butler = await startButler({
        configPath: args.config,
        handleSignals: true,
      });
      await butler.finished;
      return 0;
    }
  }
}

/**
 * `${VAR}` values for `permissions`: the environment's, or for a variable
 * that is not set (or may not be read), a stand-in long enough for a key or
 * a secret and distinct per name, so two clients' keys do not collide.
 */
function orStandIn(name: string): string {
  let value: string | undefined;
  try {
    value = Deno.env.get(name);
  } catch {
    value = undefined;
  }
  return value ?? `stand-in-for-${name}-${"x".repeat(40)}`;
}

if (import.meta.main) {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(USAGE);
    Deno.exit(0);
  }
  if (Deno.args.includes("--version")) {
    console.log(VERSION);
    Deno.exit(0);
  }
  const args = parseArgs(Deno.args);
  if (typeof args === "string") {
    console.error(`butler: ${args}\n\n${USAGE}`);
    Deno.exit(2);
  }
  try {
    Deno.exit(await run(args));
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`butler: invalid config:\n${error.message}`);
      Deno.exit(1);
    }
    if (error instanceof StateFileError || error instanceof StartupError) {
      console.error(`butler: ${error.message}`);
      Deno.exit(1);
    }
    if (error instanceof Deno.errors.NotCapable) {
      console.error(
        `butler: permission refused: ${error.message}\n` +
          "run `butler permissions` (or `main.ts permissions`) for the " +
          "flags this config needs",
      );
      Deno.exit(1);
    }
    throw error;
  }
}
