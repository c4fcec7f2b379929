// node check.mjs FILE: validate an AsyncAPI document with the official parser (errors fail; warnings print).
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const file = process.argv[2];
const { document, diagnostics } = await new Parser().parse(readFileSync(file, 'utf8'));
const severities = ['error', 'warning', 'info', 'hint'];
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics.filter((d) => d.severity <= 1)) {
  console.error(`${file}: ${severities[d.severity]} ${d.code} at ${d.path.join('.') || '/'}: ${d.message}`);
}
if (!document || errors.length > 0) {
  console.error(`${file}: not a valid AsyncAPI document (${errors.length} error(s))`);
  process.exit(1);
}
