/**
 * Some tests drive programs from Debian's packages (chromium, openssl, curl,
 * systemd-analyze, strace). `.ci/run` installs them, and in CI (`CI=true`)
 * their tests always run: a missing program fails them with a clear message.
 * On a developer's machine without them, those tests are reported as
 * ignored, with a line saying which package to install, so the README's test
 * command works on a machine that has only Node.js and npm.
 *
 * @module
 */

function onPath(program: string): boolean {
  if (program.startsWith("/")) return exists(program);
  const path = Deno.env.get("PATH") ?? "";
  return path.split(":").some((dir) =>
    dir !== "" && exists(`${dir}/${program}`)
  );
}

function exists(file: string): boolean {
  try {
    return Deno.statSync(file).isFile;
  } catch {
    return false;
  }
}

const warned = new Set<string>();

/**
 * Whether to ignore a test that needs `programs` (with the Debian package
 * that provides each). Never ignores in CI.
 */
export function ignoreWithout(
  programs: Readonly<Record<string, string>>,
): boolean {
  if (Deno.env.get("CI") === "true") return false;
  const missing = Object.entries(programs).filter(([program]) =>
    !onPath(program)
  );
  for (const [program, pkg] of missing) {
    if (warned.has(program)) continue;
    warned.add(program);
    console.warn(
      `note: ${program} is not installed; its tests are ignored here ` +
        `(apt-get install ${pkg}; CI installs it and runs them)`,
    );
  }
  return missing.length > 0;
}
