// The list's filters: every filter GET /v1/mentions has, read from the form as the API's parameters,
// and the same filters applied to one mention (to decide whether a live one belongs in the list).

import { el } from "./dom.js";
import { departmentName } from "./queues.js";

// Form field name -> API parameter. `overdue` is "", "true" or "false".
export const FILTERS = [
  "department",
  "status",
  "priority",
  "topic",
  "sentiment",
  "intent",
  "kind",
  "source",
  "language",
  "overdue",
  "assignee",
  "author",
  "since",
  "until",
  "q",
];

/** A day of the date inputs (local time) as the API's date-time: its start, or for `until` (exclusive)
 * the start of the next day. */
function dayBoundary(value, next) {
  const day = new Date(`${value}T00:00:00`);
  if (Number.isNaN(day.getTime())) return "";
  if (next) day.setDate(day.getDate() + 1);
  return day.toISOString();
}

/** The API parameters the form selects (empty ones left out). */
export function readFilters(form) {
  const data = new FormData(form);
  const params = {};
  for (const name of FILTERS) {
    const value = String(data.get(name) || "").trim();
    if (!value) continue;
    params[name] = name === "since" || name === "until" ? dayBoundary(value, name === "until") : value;
    if (!params[name]) delete params[name];
  }
  return params;
}

export function setFilter(form, name, value) {
  const field = form.elements.namedItem(name);
  if (field) field.value = value || "";
}

function options(select, items, allLabel) {
  const current = select.value;
  select.replaceChildren(el("option", { attrs: { value: "" } }, allLabel));
  for (const [value, label] of items) select.append(el("option", { attrs: { value } }, label));
  select.value = [...select.options].some((o) => o.value === current) ? current : "";
}

/** Fill the selects whose options come from the API: departments, topics, sources. */
export function fillOptions(form, { departments, topics, sources }) {
  const named = (name) => form.elements.namedItem(name);
  if (departments) {
    options(
      named("department"),
      departments.map((d) => [d, departmentName(d)]),
      "All departments",
    );
  }
  if (topics)
    options(
      named("topic"),
      topics.map((t) => [t, t]),
      "All topics",
    );
  if (sources) {
    const sorted = [...sources].sort((a, b) => a.name.localeCompare(b.name));
    options(
      named("source"),
      sorted.map((s) => [s.id, s.name]),
      "All sources",
    );
  }
}

const AWAITING = new Set(["new", "acknowledged", "reopened"]);

function assignmentMatches(a, f) {
  if (f.department && a.department !== f.department) return false;
  if (f.status && a.status !== f.status) return false;
  if (f.priority && a.priority !== f.priority) return false;
  if (f.assignee && a.assignee !== f.assignee) return false;
  if (f.overdue) {
    const late = AWAITING.has(a.status) && !a.first_response_at && Date.parse(a.sla_due_at) < Date.now();
    if ((f.overdue === "true") !== late) return false;
  }
  return true;
}

/**
 * Whether `mention` belongs in the list `f` selects: true, false, or null when only the server can tell
 * (a text query).
 */
export function matches(mention, f) {
  if (f.q) return null;
  const checks = [
    [f.topic, () => (mention.topics || []).includes(f.topic)],
    [f.sentiment, () => mention.sentiment === f.sentiment],
    [f.intent, () => mention.intent === f.intent],
    [f.kind, () => mention.kind === f.kind],
    [f.source, () => mention.source_id === f.source],
    [f.language, () => mention.language === f.language],
    [f.author, () => (mention.author || "").toLowerCase() === f.author.toLowerCase()],
    [f.since, () => Date.parse(mention.routed_at) >= Date.parse(f.since)],
    [f.until, () => Date.parse(mention.routed_at) < Date.parse(f.until)],
  ];
  if (checks.some(([given, test]) => given && !test())) return false;
  const onAssignments = f.department || f.status || f.priority || f.overdue || f.assignee;
  return !onAssignments || (mention.assignments || []).some((a) => assignmentMatches(a, f));
}
