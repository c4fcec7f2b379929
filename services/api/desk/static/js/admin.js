// The views around the queues: spike alerts (a banner), the sources with their health (failing feeds
// first), and for admins the active routing rules and a dry run ("where would this text go, and why").

import { ApiError } from "./api.js";
import { announce, append, byId, clear, el, link, percent, time } from "./dom.js";
import { labelsOf } from "./evidence.js";
import { departmentName } from "./queues.js";

// --- alerts ---------------------------------------------------------------------------------------

export async function showAlerts(api, me, container) {
  const page = await api.get("/v1/alerts", { acknowledged: false, limit: 5 });
  clear(container);
  container.hidden = page.items.length === 0;
  for (const alert of page.items) {
    const ratio = alert.ratio
      ? ` (${alert.ratio.toFixed(1)}× the usual ${alert.baseline.toFixed(1)} an hour)`
      : "";
    const mayAck = alert.department ? me.write.includes(alert.department) : me.write.length > 0;
    const ack = mayAck
      ? el(
          "button",
          {
            attrs: { type: "button" },
            on: {
              click: async () => {
                await api.post(`/v1/alerts/${alert.id}/acknowledge`);
                await showAlerts(api, me, container);
              },
            },
          },
          "Acknowledge",
        )
      : null;
    container.append(
      el(
        "p",
        { class: "alert" },
        el("strong", {}, "Spike: "),
        `topic ${alert.topic}`,
        alert.department ? ` (${departmentName(alert.department)})` : "",
        ` – ${alert.count} mentions in the hour from `,
        time(alert.window_start),
        ratio,
        " ",
        ack,
      ),
    );
  }
}

// --- sources --------------------------------------------------------------------------------------

function health(s) {
  if (!s.enabled) return ["disabled", "off"];
  if (s.consecutive_failures > 0) return [`failing (${s.consecutive_failures}×)`, "failing"];
  if (!s.last_success_at) return ["not polled yet", "pending"];
  return ["ok", "ok"];
}

/** Failing first (most failures first), then never polled, then the healthy ones by name. */
export function sourceOrder(a, b) {
  const rank = (s) => (!s.enabled ? 3 : s.consecutive_failures > 0 ? 0 : !s.last_success_at ? 1 : 2);
  return rank(a) - rank(b) || b.consecutive_failures - a.consecutive_failures || a.name.localeCompare(b.name);
}

export async function showSources(api, container) {
  const { items } = await api.get("/v1/sources", { include_discovered: false });
  const rows = [...items].sort(sourceOrder).map((s) => {
    const [state, cls] = health(s);
    return el(
      "tr",
      { class: `source-${cls}`, data: { id: s.id } },
      el("th", { attrs: { scope: "row" } }, link(s.url, s.name)),
      el("td", {}, s.kind),
      el("td", { class: `health ${cls}` }, state),
      el("td", {}, s.last_success_at ? time(s.last_success_at, { ago: true }) : "–"),
      el("td", { class: "error" }, s.last_error || ""),
      el("td", { class: "num" }, String(s.items_seen)),
    );
  });
  clear(container);
  const head = ["Source", "Kind", "Health", "Last success", "Last error", "Items"].map((h) =>
    el("th", { attrs: { scope: "col" } }, h),
  );
  container.append(
    el("h2", {}, "Sources"),
    el("table", { class: "sources" }, el("thead", {}, el("tr", {}, head)), el("tbody", {}, rows)),
  );
}

// --- rules and the dry run (admins) ---------------------------------------------------------------

function conditions(when) {
  const entries = Object.entries(when || {});
  if (entries.length === 0) return "every mention";
  return entries
    .map(([k, v]) => `${k.replace(/_/g, " ")}: ${Array.isArray(v) ? v.join(", ") : String(v)}`)
    .join("; ");
}

function routes(route) {
  return (route || [])
    .map((r) => `${departmentName(r.department)} ${r.priority || "P3"} (${r.sla_minutes || 1440} min)`)
    .join(", ");
}

function ruleRows(body) {
  const rows = (body.rules || []).map((r, i) =>
    el(
      "tr",
      {},
      el("td", { class: "num" }, String(i + 1)),
      el(
        "th",
        { attrs: { scope: "row" } },
        r.name,
        r.stop ? el("span", { class: "meta" }, " (stops)") : null,
      ),
      el("td", {}, conditions(r.when)),
      el("td", {}, routes(r.route)),
      el("td", {}, (r.tags || []).join(", ")),
    ),
  );
  const fallback = body.fallback || {};
  rows.push(
    el(
      "tr",
      {},
      el("td", {}, ""),
      el("th", { attrs: { scope: "row" } }, "fallback"),
      el("td", {}, "no rule routed it"),
      el("td", {}, routes([fallback])),
      el("td", {}, ""),
    ),
  );
  return rows;
}

export async function showRules(api, container) {
  clear(container);
  let active;
  try {
    active = await api.get("/v1/routing-rules");
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    container.append(el("h2", {}, "Routing rules"), el("p", {}, "No rule set is active yet."));
    return;
  }
  const head = ["#", "Rule", "When", "Routes to", "Tags"].map((h) =>
    el("th", { attrs: { scope: "col" } }, h),
  );
  container.append(
    el("h2", {}, `Routing rules, version ${active.version}`),
    el(
      "p",
      { class: "meta" },
      `Activated by ${active.activated_by || "–"} `,
      active.activated_at ? time(active.activated_at, { ago: true }) : "",
      active.comment ? ` – ${active.comment}` : "",
    ),
    el(
      "table",
      { class: "rules" },
      el("thead", {}, el("tr", {}, head)),
      el("tbody", {}, ruleRows(active.rules || {})),
    ),
  );
}

function dryRunResult(result) {
  const labels = labelsOf(result.classification)
    .map((l) => `${l.kind} ${l.value}${l.confidence === null ? "" : ` ${percent(l.confidence)}`}`)
    .join(", ");
  return [
    el(
      "h3",
      {},
      result.departments.length
        ? `It would go to ${result.departments.map(departmentName).join(" and ")}`
        : "It would go nowhere",
    ),
    el(
      "ul",
      { class: "outcome" },
      result.assignments.map((a) =>
        el(
          "li",
          {},
          `${departmentName(a.department)}: ${a.priority}, first response within ${a.sla_minutes} min, by ${a.rules.join(", ")}`,
        ),
      ),
    ),
    el("h4", {}, "Why: the rules that matched, in order"),
    el(
      "ol",
      { class: "matched" },
      result.matched.map((m) => el("li", {}, el("strong", {}, m.rule), ": ", m.conditions.join("; "))),
    ),
    el("p", { class: "meta" }, `Labels (rule engine): ${labels}`),
    result.tags.length ? el("p", { class: "meta" }, `Tags: ${result.tags.join(", ")}`) : null,
  ];
}

export function bindDryRun(api) {
  const form = byId("dryrun");
  const out = byId("dryrun-result");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const mention = { title: String(data.get("title") || ""), text: String(data.get("text") || "") };
    clear(out);
    try {
      const result = await api.post("/v1/routing-rules/test", { mention });
      append(out, ...dryRunResult(result));
      out.focus();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      announce(error.message, "error");
    }
  });
}
