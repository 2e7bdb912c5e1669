// Validate an AsyncAPI document with @asyncapi/parser (the parser and Spectral ruleset that
// `asyncapi validate` runs): the document must parse, follow the AsyncAPI 3.0 schema, resolve
// every $ref (the JSON Schemas under schemas/) and raise no error or warning.
// Usage: node validate.cjs docs/asyncapi.yaml   (scripts/validate-asyncapi installs the parser)
'use strict';
const path = require('node:path');
const { Parser, fromFile } = require('@asyncapi/parser');

const SEVERITY = ['error', 'warning', 'info', 'hint'];

async function main() {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: validate.cjs ASYNCAPI_FILE');
    process.exit(2);
  }
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, path.resolve(file)).parse();
  let failed = !document;
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] || String(d.severity);
    const at = d.path && d.path.length ? ` at ${d.path.join('.')}` : '';
    console.log(`${severity}: ${d.code}: ${d.message}${at}`);
    if (d.severity <= 1) failed = true;
  }
  if (failed) {
    console.error(`${file}: INVALID`);
    process.exit(1);
  }
  const channels = document.channels().length;
  const operations = document.operations().length;
  const messages = document.components().messages().length;
  console.log(
    `${file}: valid AsyncAPI ${document.version()} (${channels} channels, ${operations} operations, ${messages} messages)`,
  );
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
