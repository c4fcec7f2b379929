// Validates ServiceMonitor objects (JSON, one array per file) against the Prometheus Operator's CRD
// schema, as compiled into @kubernetes-models/prometheus-operator (npm). Exit 1 on any violation.
//   node check.mjs FILE.json...
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

let failed = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  for (const object of JSON.parse(readFileSync(file, "utf8"))) {
    checked++;
    try {
      new ServiceMonitor(object).validate();
    } catch (error) {
      failed++;
      console.error(`${file}: ServiceMonitor ${object?.metadata?.name}: ${error.message}`);
    }
  }
}
console.log(`ServiceMonitor: ${checked} checked, ${failed} invalid`);
process.exit(failed ? 1 : 0);
