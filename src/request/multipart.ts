/**
 * The fields of a `multipart/form-data` transcription request that Butler
 * decides on, read as Ollama's Go handler reads them with `r.FormValue`:
 * `model`, and `prompt` and `language`, which Ollama writes into the
 * model's system prompt.
 *
 * Go's `Request.ParseMultipartForm` puts the URL query values in `r.Form`
 * first and appends the form's values after them, so `FormValue` returns the
 * query's `model` when both are present (the shared notes say the form wins;
 * Go's source says otherwise). Butler does not need to know which wins: it
 * refuses a request whose form fields and query parameters named `model`
 * disagree, and returns the one value they all share.
 *
 * The multipart grammar accepted here is a strict subset of what Go's
 * `mime/multipart` reads, so every body accepted is split into the same
 * parts by both: CRLF line endings only, no preamble, no folded headers,
 * no RFC 2231 parameters except `filename*`. Anything else is refused (400)
 * rather than guessed at.
 *
 * @module
 */

import { BodyError } from "./read_body.ts";

// Go's defaults: a form with more parts or headers fails to parse, and
// FormValue then falls back to the query alone.
const MAX_PARTS = 1000;
const MAX_HEADERS = 10000;

const CR = 0x0d;
const LF = 0x0a;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The `model` a transcription request names: every non-file form part named
 * exactly `model` and every `model` query parameter (`query` is the raw
 * `?…` string or `""`) must agree; returns their value, or `undefined` when
 * there is none. Disagreeing values throw `BodyError(400, "ambiguous_field")`;
 * a body or `Content-Type` that is not well-formed multipart, or a malformed
 * query, throw `BodyError` 400.
 *
 * @example
 * ```ts
 * const model = multipartModel(decoded, {
 *   contentType: request.headers.get("content-type") ?? "",
 *   query: new URL(request.url).search,
 * });
 * ```
 */
export function multipartModel(
  body: Uint8Array,
  options: { contentType: string; query: string },
): string | undefined {
  return multipartFormValues(body, { ...options, names: ["model"] })
    .get("model");
}

/**
 * What Go's `r.FormValue(name)` gives for each of `names`, under the same
 * rule as {@linkcode multipartModel}: every non-file form part named exactly
 * `name` and every `name` query parameter must agree, or the request is
 * refused (`BodyError(400, "ambiguous_field")`); a name with none maps to
 * `undefined`. The body is split once for all names.
 *
 * @example
 * ```ts
 * const fields = multipartFormValues(decoded, {
 *   contentType: request.headers.get("content-type") ?? "",
 *   query: new URL(request.url).search,
 *   names: ["model", "prompt", "language"],
 * });
 * fields.get("prompt"); // "a glossary of names" or undefined
 * ```
 */
export function multipartFormValues(
  body: Uint8Array,
  options: { contentType: string; query: string; names: readonly string[] },
): Map<string, string | undefined> {
  const fromForm = formValues(
    body,
    boundaryOf(options.contentType),
    options.names,
  );
  const result = new Map<string, string | undefined>();
  for (const name of options.names) {
    const values = [
      ...queryValues(options.query, name),
      ...(fromForm.get(name) ?? []),
    ];
    const distinct = new Set(values);
    if (distinct.size > 1) {
      throw new BodyError(
        400,
        "ambiguous_field",
        name === "model"
          ? `model: the request names ${distinct.size} different models in ` +
            "its form fields and query parameters; name one"
          : `${name}: the request gives ${distinct.size} different values in ` +
            "its form fields and query parameters; send one",
      );
    }
    result.set(name, values[0]);
  }
  return result;
}

function badMultipart(what: string): BodyError {
  return new BodyError(400, "bad_multipart", `multipart body: ${what}`);
}

/** Values of `name` in a URL query, decoded as Go's `url.ParseQuery` does. */
function queryValues(query: string, name: string): string[] {
  const text = query.startsWith("?") ? query.slice(1) : query;
  const values: string[] = [];
  for (const pair of text.split("&")) {
    if (pair === "") continue;
    // Go skips pairs with ';' or bad escapes; refused here instead.
    if (pair.includes(";")) {
      throw new BodyError(
        400,
        "bad_query",
        "query: ';' is not a parameter separator; use '&'",
      );
    }
    const equals = pair.indexOf("=");
    const key = unescapeQuery(equals < 0 ? pair : pair.slice(0, equals));
    const value = equals < 0 ? "" : unescapeQuery(pair.slice(equals + 1));
    if (key === name) values.push(value);
  }
  return values;
}

function unescapeQuery(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === "+") {
      bytes.push(0x20);
    } else if (char === "%") {
      const hex = text.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) {
        throw new BodyError(
          400,
          "bad_query",
          `query: ${JSON.stringify(text.slice(i, i + 3))} is not a % escape`,
        );
      }
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      // Non-ASCII in a raw query is UTF-8 in Go's byte string.
      for (const byte of new TextEncoder().encode(char)) bytes.push(byte);
    }
  }
  try {
    return utf8.decode(new Uint8Array(bytes));
  } catch {
    throw new BodyError(400, "bad_query", "query: escapes are not UTF-8");
  }
}

/** The boundary from a `multipart/form-data` Content-Type. */
function boundaryOf(contentType: string): string {
  const parsed = parseMediaType(contentType, "Content-Type");
  if (parsed.type !== "multipart/form-data") {
    throw new BodyError(
      400,
      "bad_multipart",
      `Content-Type: ${
        JSON.stringify(parsed.type)
      } is not accepted; this route reads multipart/form-data`,
    );
  }
  if ([...parsed.params.keys()].some((key) => key.includes("*"))) {
    throw badMultipart("Content-Type parameters in RFC 2231 form");
  }
  const boundary = parsed.params.get("boundary");
  if (boundary === undefined) {
    throw badMultipart("Content-Type has no boundary parameter");
  }
  // RFC 2046 §5.1.1 bchars, 1 to 70 of them, not ending in a space.
  if (
    !/^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/.test(boundary)
  ) {
    throw badMultipart(
      `boundary ${JSON.stringify(boundary.slice(0, 80))} is not 1 to 70 ` +
        "RFC 2046 boundary characters",
    );
  }
  return boundary;
}

interface MediaType {
  type: string;
  params: Map<string, string>;
}

function isTSpecial(char: string): boolean {
  return `()<>@,;:\\"/[]?=`.includes(char);
}

function isTokenChar(char: string): boolean {
  const code = char.charCodeAt(0);
  return code > 0x20 && code < 0x7f && !isTSpecial(char);
}

/**
 * A media type or disposition with parameters, following Go's
 * `mime.ParseMediaType` for what it accepts, except that only space and tab
 * count as white space; any deviation throws.
 */
function parseMediaType(text: string, header: string): MediaType {
  const fail = (what: string) =>
    badMultipart(`${header}: ${what} in ${JSON.stringify(text.slice(0, 200))}`);

  const semicolon = text.indexOf(";");
  const base = semicolon < 0 ? text : text.slice(0, semicolon);
  const type = base.replace(/^[ \t]+|[ \t]+$/g, "").toLowerCase();
  const [major, minor, ...extra] = type.split("/");
  const isToken = (part: string | undefined) =>
    part !== undefined && part.length > 0 && [...part].every(isTokenChar);
  if (
    !isToken(major) || extra.length > 0 ||
    (minor !== undefined && !isToken(minor))
  ) {
    throw fail("not a media type");
  }

  const params = new Map<string, string>();
  let pos = base.length;
  const skipSpace = () => {
    while (text[pos] === " " || text[pos] === "\t") pos++;
  };
  for (;;) {
    skipSpace();
    if (pos >= text.length) break;
    if (text[pos] !== ";") throw fail("expected ';'");
    pos++;
    skipSpace();
    if (pos >= text.length) break; // a trailing ';' is allowed

    const nameStart = pos;
    while (pos < text.length && isTokenChar(text[pos])) pos++;
    const name = text.slice(nameStart, pos).toLowerCase();
    if (name === "") throw fail("expected a parameter name");
    skipSpace();
    if (text[pos] !== "=") throw fail(`expected '=' after ${name}`);
    pos++;
    skipSpace();

    let value: string;
    if (text[pos] === '"') {
      [value, pos] = readQuoted(text, pos + 1, fail);
    } else {
      const valueStart = pos;
      while (pos < text.length && isTokenChar(text[pos])) pos++;
      value = text.slice(valueStart, pos);
      if (value === "") throw fail(`expected a value for ${name}`);
    }

    const previous = params.get(name);
    if (previous !== undefined && previous !== value) {
      throw fail(`parameter ${name} given twice with different values`);
    }
    params.set(name, value);
  }
  return { type, params };
}

/**
 * A quoted string starting after its opening quote. As in Go, a backslash
 * escapes only a tspecial; before anything else it is a literal backslash.
 */
function readQuoted(
  text: string,
  start: number,
  fail: (what: string) => BodyError,
): [string, number] {
  let value = "";
  for (let pos = start; pos < text.length; pos++) {
    const char = text[pos];
    if (char === '"') return [value, pos + 1];
    if (char === "\\" && pos + 1 < text.length && isTSpecial(text[pos + 1])) {
      value += text[pos + 1];
      pos++;
      continue;
    }
    if (char === "\r" || char === "\n") break;
    value += char;
  }
  throw fail("unterminated quoted string");
}

/** Values of the non-file parts named exactly one of `names`, by name. */
function formValues(
  body: Uint8Array,
  boundary: string,
  names: readonly string[],
): Map<string, string[]> {
  const dashBoundary = new TextEncoder().encode(`--${boundary}`);
  const values = new Map<string, string[]>();
  let headerCount = 0;

  // The body starts with the first delimiter line: no preamble.
  if (!startsWith(body, dashBoundary, 0)) {
    throw badMultipart("does not start with the boundary delimiter");
  }
  let pos = 0;
  let parts = 0;
  for (;;) {
    // pos is at a delimiter line "--boundary[--] LWSP* CRLF".
    const afterLine = delimiterLineEnd(body, pos, dashBoundary.length);
    if (afterLine === "final") return values;
    parts++;
    if (parts > MAX_PARTS) {
      throw badMultipart(`more than ${MAX_PARTS} parts`);
    }

    const [headers, bodyStart] = readPartHeaders(body, afterLine);
    headerCount += headers.length;
    if (headerCount > MAX_HEADERS) {
      throw badMultipart(`more than ${MAX_HEADERS} part headers`);
    }
    const bodyEnd = findPartEnd(body, bodyStart, dashBoundary);

    const field = formField(headers, names, body.subarray(bodyStart, bodyEnd));
    if (field !== undefined) {
      values.set(field.name, [...(values.get(field.name) ?? []), field.value]);
    }

    // A part ends either right at a delimiter or at CRLF before one.
    pos = startsWith(body, dashBoundary, bodyEnd) ? bodyEnd : bodyEnd + 2;
  }
}

/** Returns the offset after a delimiter line at `pos`, or "final". */
function delimiterLineEnd(
  body: Uint8Array,
  pos: number,
  boundaryLength: number,
): number | "final" {
  let at = pos + boundaryLength;
  const final = body[at] === 0x2d && body[at + 1] === 0x2d;
  if (final) at += 2;
  while (body[at] === 0x20 || body[at] === 0x09) at++;
  if (final && at === body.length) return "final";
  if (body[at] === CR && body[at + 1] === LF) {
    return final ? "final" : at + 2;
  }
  throw badMultipart(`malformed boundary delimiter line at byte ${pos}`);
}

/** Reads CRLF-terminated header lines up to the empty line. */
function readPartHeaders(
  body: Uint8Array,
  start: number,
): [Array<[string, string]>, number] {
  const headers: Array<[string, string]> = [];
  let pos = start;
  for (;;) {
    const lf = body.indexOf(LF, pos);
    if (lf < 0) throw badMultipart(`unterminated part headers at byte ${pos}`);
    if (lf === pos || body[lf - 1] !== CR) {
      throw badMultipart(`header line without CRLF at byte ${pos}`);
    }
    if (lf - 1 === pos) return [headers, lf + 1];

    let line: string;
    try {
      line = utf8.decode(body.subarray(pos, lf - 1));
    } catch {
      throw badMultipart(`part header is not UTF-8 at byte ${pos}`);
    }
    headers.push(parseHeaderLine(line, pos));
    pos = lf + 1;
  }
}

function parseHeaderLine(line: string, offset: number): [string, string] {
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(line)) {
    throw badMultipart(`control character in part header at byte ${offset}`);
  }
  if (line[0] === " " || line[0] === "\t") {
    throw badMultipart(`folded part header at byte ${offset}`);
  }
  const colon = line.indexOf(":");
  const name = colon < 0 ? "" : line.slice(0, colon);
  // Header names are RFC 9110 tokens, as Go's textproto requires.
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) {
    throw badMultipart(`malformed part header at byte ${offset}`);
  }
  return [
    name.toLowerCase(),
    line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, ""),
  ];
}

/**
 * The end of a part's content, found as Go finds it: at the start of the
 * content, `--boundary` ends an empty part; elsewhere `CRLF--boundary` ends
 * it, when followed by white space, CR, LF or `--`. Any other continuation
 * is content.
 */
function findPartEnd(
  body: Uint8Array,
  start: number,
  dashBoundary: Uint8Array,
): number {
  if (
    startsWith(body, dashBoundary, start) &&
    endsDelimiter(body, start + dashBoundary.length)
  ) {
    return start;
  }

  let from = start;
  for (;;) {
    const cr = body.indexOf(CR, from);
    if (cr < 0) throw badMultipart("the closing boundary is missing");
    if (
      body[cr + 1] === LF && startsWith(body, dashBoundary, cr + 2) &&
      endsDelimiter(body, cr + 2 + dashBoundary.length)
    ) {
      return cr;
    }
    from = cr + 1;
  }
}

function endsDelimiter(body: Uint8Array, at: number): boolean {
  const next = body[at];
  if (next === undefined) return true;
  if (next === 0x20 || next === 0x09 || next === CR || next === LF) return true;
  return next === 0x2d && body[at + 1] === 0x2d;
}

/**
 * The name and value of a part if Go's ReadForm files it as a form value
 * named one of `names`.
 */
function formField(
  headers: Array<[string, string]>,
  names: readonly string[],
  content: Uint8Array,
): { name: string; value: string } | undefined {
  const dispositions = headers.filter(([key]) => key === "content-disposition");
  if (dispositions.length === 0) return undefined; // Go skips the part
  if (dispositions.length > 1) {
    throw badMultipart("a part has several Content-Disposition headers");
  }
  const disposition = parseMediaType(
    dispositions[0][1],
    "Content-Disposition",
  );
  const params = [...disposition.params.keys()];
  if (params.some((key) => key.includes("*") && key !== "filename*")) {
    throw badMultipart(
      "Content-Disposition parameters in RFC 2231 form other than filename*",
    );
  }
  if (disposition.type !== "form-data") return undefined; // Go skips it
  const name = disposition.params.get("name");
  if (name === undefined || !names.includes(name)) return undefined;

  // A part with a non-empty filename is a file; filename="" is a value in Go.
  if (disposition.params.has("filename*")) {
    throw badMultipart(
      `the ${name} part has a filename* parameter; send it as a plain field`,
    );
  }
  if ((disposition.params.get("filename") ?? "") !== "") return undefined;

  // Go decodes quoted-printable parts transparently; refuse any encoding.
  const encodings = headers.filter(([key]) =>
    key === "content-transfer-encoding"
  );
  if (
    encodings.some(([, value]) =>
      !["7bit", "8bit", "binary"].includes(value.toLowerCase())
    )
  ) {
    throw badMultipart(
      `the ${name} part has a Content-Transfer-Encoding; send it as plain text`,
    );
  }

  try {
    return { name, value: utf8.decode(content) };
  } catch {
    throw badMultipart(`the ${name} part is not UTF-8`);
  }
}

function startsWith(
  bytes: Uint8Array,
  prefix: Uint8Array,
  at: number,
): boolean {
  if (at + prefix.length > bytes.length) return false;
  for (let i = 0; i < prefix.length; i++) {
    if (bytes[at + i] !== prefix[i]) return false;
  }
  return true;
}
