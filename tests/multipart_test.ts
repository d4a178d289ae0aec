import assert from "node:assert/strict";
import { BodyError } from "../src/request/read_body.ts";
import { multipartModel } from "../src/request/multipart.ts";

const BOUNDARY = "----butlerBoundary7MA4YWxk";
const CONTENT_TYPE = `multipart/form-data; boundary=${BOUNDARY}`;

interface Part {
  disposition: string;
  content: string | Uint8Array;
  headers?: string[];
}

function form(parts: Part[], boundary = BOUNDARY): Uint8Array {
  const chunks: Uint8Array[] = [];
  const text = (value: string) => chunks.push(new TextEncoder().encode(value));
  for (const part of parts) {
    text(`--${boundary}\r\nContent-Disposition: ${part.disposition}\r\n`);
    for (const header of part.headers ?? []) text(`${header}\r\n`);
    text("\r\n");
    if (typeof part.content === "string") text(part.content);
    else chunks.push(part.content);
    text("\r\n");
  }
  text(`--${boundary}--\r\n`);
  return concat(chunks);
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

const audio: Part = {
  disposition: 'form-data; name="file"; filename="a.wav"',
  headers: ["Content-Type: audio/wav"],
  content: new Uint8Array([0, 1, 2, 0x0d, 0x0a, 0x2d, 0x2d, 0xff]),
};
const model = (value: string): Part => ({
  disposition: 'form-data; name="model"',
  content: value,
});

function read(
  body: Uint8Array | string,
  query = "",
  contentType = CONTENT_TYPE,
) {
  const bytes = typeof body === "string"
    ? new TextEncoder().encode(body)
    : body;
  return multipartModel(bytes, { contentType, query });
}

function assertRefused(call: () => unknown, reason: string) {
  assert.throws(
    call,
    (error) =>
      error instanceof BodyError && error.status === 400 &&
      error.reason === reason,
    `expected BodyError 400 ${reason}`,
  );
}

Deno.test("multipartModel reads the model form field", () => {
  assert.equal(read(form([audio, model("whisper:small")])), "whisper:small");
  assert.equal(read(form([model("m"), audio])), "m");
  // Quoted boundary, extra parameters, case-insensitive type.
  assert.equal(
    read(
      form([model("m")]),
      "",
      `Multipart/Form-Data; charset=utf-8; boundary="${BOUNDARY}"`,
    ),
    "m",
  );
});

Deno.test("multipartModel falls back to the query, and returns undefined without either", () => {
  assert.equal(read(form([audio]), "?model=whisper%3Atiny"), "whisper:tiny");
  assert.equal(read(form([audio]), "a=1&model=x+y"), "x y");
  assert.equal(read(form([audio])), undefined);
  assert.equal(read(form([audio]), "?other=1"), undefined);
});

Deno.test("multipartModel accepts agreeing duplicates and refuses disagreeing ones", () => {
  assert.equal(read(form([model("m"), audio, model("m")]), "?model=m"), "m");
  assertRefused(() => read(form([model("a"), model("b")])), "ambiguous_field");
  assertRefused(() => read(form([model("a")]), "?model=b"), "ambiguous_field");
  assertRefused(
    () => read(form([audio]), "?model=a&model=b"),
    "ambiguous_field",
  );
  // Go returns the query's (empty) value first: disagreement all the same.
  assertRefused(() => read(form([model("a")]), "?model="), "ambiguous_field");
});

Deno.test("multipartModel ignores a file part named model and non-form-data parts", () => {
  const fileNamedModel: Part = {
    disposition: 'form-data; name="model"; filename="model.txt"',
    content: "denied-model",
  };
  assert.equal(read(form([fileNamedModel, model("m")])), "m");
  assert.equal(read(form([fileNamedModel])), undefined);
  const attachment: Part = {
    disposition: 'attachment; name="model"',
    content: "denied-model",
  };
  assert.equal(read(form([attachment]), "?model=q"), "q");
  // Exact name only: Go's r.Form is case-sensitive.
  const upper: Part = { disposition: 'form-data; name="Model"', content: "x" };
  assert.equal(read(form([upper])), undefined);
});

Deno.test('multipartModel treats filename="" as a value, as Go does', () => {
  const emptyFilename: Part = {
    disposition: 'form-data; name="model"; filename=""',
    content: "denied-model",
  };
  assert.equal(read(form([emptyFilename])), "denied-model");
  assertRefused(
    () => read(form([emptyFilename, model("allowed")])),
    "ambiguous_field",
  );
});

Deno.test("multipartModel finds boundaries as Go does", () => {
  // "--boundary" not followed by white space, CRLF or "--" is content.
  const tricky =
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\n` +
    `a\r\n--${BOUNDARY}x\r\n--${BOUNDARY}\r\nContent-Disposition: form-data; name="z"\r\n\r\nz\r\n--${BOUNDARY}--`;
  assert.equal(read(tricky), `a\r\n--${BOUNDARY}x`);
  // An empty part whose content starts right at the next delimiter.
  const empty =
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="x"\r\n\r\n` +
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--${BOUNDARY}-- \r\nepilogue`;
  assert.equal(read(empty), "m");
  // Transport padding after the boundary.
  const padded =
    `--${BOUNDARY} \t\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n--${BOUNDARY}--`;
  assert.equal(read(padded), "m");
});

Deno.test("multipartModel refuses a malformed Content-Type", () => {
  for (
    const contentType of [
      "multipart/form-data",
      "application/json",
      "multipart/mixed; boundary=x",
      "multipart/form-data; boundary=",
      `multipart/form-data; boundary="${"b".repeat(71)}"`,
      "multipart/form-data; boundary=a; boundary=b",
      "multipart/form-data; boundary*=utf-8''abc",
      'multipart/form-data; boundary="unterminated',
      "multipart/form-data boundary=x",
    ]
  ) {
    assert.throws(
      () => read(form([model("m")]), "", contentType),
      (error) => error instanceof BodyError && error.status === 400,
      contentType,
    );
  }
});

Deno.test("multipartModel refuses malformed bodies", () => {
  const head =
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n`;
  for (
    const body of [
      "", // no delimiter
      `preamble\r\n${head}\r\nm\r\n--${BOUNDARY}--`, // preamble
      `${head}\r\nm`, // no closing boundary
      `${head}\r\nm\r\n--${BOUNDARY}`, // delimiter at end without CRLF
      `${head}\r\nm\r\n--${BOUNDARY}--junk`, // junk after final
      `${head}\r\nm\r\n--${BOUNDARY} junk\r\n`, // junk on a delimiter line
      `--${BOUNDARY}\nContent-Disposition: form-data; name="model"\n\nm\n--${BOUNDARY}--`, // LF only
      `--${BOUNDARY}\r\nContent-Disposition: form-data;\r\n name="model"\r\n\r\nm\r\n--${BOUNDARY}--`, // folded
      `--${BOUNDARY}\r\nContent-Disposition: form-data; name="x"\nX: y\r\n\r\nm\r\n--${BOUNDARY}--`, // bare LF in headers
      `--${BOUNDARY}\r\nNo colon here\r\n\r\nm\r\n--${BOUNDARY}--`,
      `--${BOUNDARY}\r\nContent-Disposition : form-data; name="model"\r\n\r\nm\r\n--${BOUNDARY}--`,
    ]
  ) {
    assertRefused(() => read(body), "bad_multipart");
  }
});

Deno.test("multipartModel refuses model parts it cannot read as Go would", () => {
  const cases: Part[] = [
    { disposition: "form-data; name*=UTF-8''model", content: "m" },
    {
      disposition: "form-data; name=\"model\"; filename*=UTF-8''x",
      content: "m",
    },
    {
      disposition: 'form-data; name="model"',
      headers: ["Content-Transfer-Encoding: quoted-printable"],
      content: "m=3D",
    },
    {
      disposition: 'form-data; name="model"',
      headers: ['Content-Disposition: form-data; name="other"'],
      content: "m",
    },
    { disposition: 'form-data; name="model"; name="other"', content: "m" },
    { disposition: 'form-data; name="model"', content: new Uint8Array([0xff]) },
  ];
  for (const part of cases) {
    assertRefused(() => read(form([part])), "bad_multipart");
  }
  // A backslash before a tspecial escapes it; before a letter it is literal.
  const escaped: Part = {
    disposition: 'form-data; name="mo\\del"',
    content: "m",
  };
  assert.equal(read(form([escaped])), undefined);
  const quoted: Part = {
    disposition: 'form-data; name="\\model"',
    content: "m",
  };
  assert.equal(read(form([quoted])), undefined);
  const special: Part = {
    disposition: 'form-data; name="model\\""',
    content: "m",
  };
  assert.equal(read(form([special])), undefined);
});

Deno.test("multipartModel refuses malformed queries", () => {
  for (const query of ["?model=a;b", "?model=%zz", "?mo%del=x", "?model=%ff"]) {
    assertRefused(() => read(form([audio]), query), "bad_query");
  }
});
