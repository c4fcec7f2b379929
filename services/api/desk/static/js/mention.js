// One mention: its text with the evidence marked, its labels with confidence, which rule sent it where,
// each department's assignment (with the buttons to work it), the replies given, its thread, its
// near-duplicates and the activity log.

import { ApiError } from "./api.js";
import { append, clear, el, link, percent, route, time } from "./dom.js";
import { evidenceIndex, highlight, labelKey, labelsOf, phraseOf } from "./evidence.js";
import { titleOf } from "./list.js";
import { departmentName } from "./queues.js";
import { assignmentCard } from "./work.js";

function section(title, id, ...content) {
  return el(
    "section",
    { class: "block", attrs: { "aria-labelledby": id } },
    el("h3", { attrs: { id } }, title),
    ...content,
  );
}

/** An evidence string: the words it points at, quoted and marked like the text; else as it reads. */
function evidenceChip(evidence) {
  const phrase = phraseOf(evidence);
  return phrase === null
    ? el("span", { class: "clue" }, evidence)
    : el("q", { class: "phrase", attrs: { title: evidence } }, phrase);
}

/** Mark only `key`'s words in the text (or every label's again when it is the one already shown). */
function focusLabel(pane, key, button) {
  const again = button.getAttribute("aria-pressed") === "true";
  for (const other of pane.querySelectorAll(".label-focus")) other.setAttribute("aria-pressed", "false");
  pane.classList.toggle("focusing", !again);
  for (const mark of pane.querySelectorAll("mark.evidence")) {
    mark.classList.toggle("lit", !again && (mark.dataset.labels || "").split("|").includes(key));
  }
  if (!again) button.setAttribute("aria-pressed", "true");
}

function labelList(labels, pane) {
  return el(
    "ul",
    { class: "labels" },
    labels.map((l) =>
      el(
        "li",
        { class: `label label-${l.kind}` },
        el(
          "button",
          {
            class: "label-focus",
            attrs: {
              type: "button",
              "aria-pressed": "false",
              title: "Mark only this label's words in the text",
            },
            on: { click: (event) => focusLabel(pane, labelKey(l), event.currentTarget) },
          },
          el("span", { class: "kind" }, l.kind),
          " ",
          el("strong", {}, String(l.value)),
        ),
        l.confidence === null ? null : el("span", { class: "confidence" }, ` ${percent(l.confidence)}`),
        l.evidence.length
          ? el("span", { class: "because" }, " because of ", l.evidence.map(evidenceChip))
          : null,
      ),
    ),
  );
}

function header(m) {
  const source = link(m.url, "Open the source", "source-link");
  return el(
    "header",
    { class: "mention-head" },
    el("h2", { attrs: { id: "mention-title", tabindex: "-1" } }),
    el(
      "p",
      { class: "meta" },
      el("span", { class: "source" }, m.source_name || m.source_id),
      ` · ${m.kind}`,
      m.author ? [" by ", el("span", { class: "author" }, m.author)] : null,
      " · published ",
      time(m.published_at),
      " · routed ",
      time(m.routed_at, { ago: true }),
      ` · ${m.language}`,
    ),
    el(
      "p",
      { class: "links" },
      source,
      m.url && !source.href
        ? el("span", { class: "warn" }, " (not shown as a link: not http or https)")
        : null,
    ),
  );
}

function routingTrail(m) {
  const perDepartment = (m.assignments || []).map((a) =>
    el(
      "li",
      {},
      el("strong", {}, departmentName(a.department)),
      ` ${a.priority}, SLA ${a.sla_minutes} min: `,
      (a.rules || []).join(", ") || "–",
    ),
  );
  return section(
    "Routing",
    "routing-title",
    el(
      "p",
      {},
      `Rule set version ${m.rules_version ?? "–"}; rules that matched, in order: `,
      el("span", { class: "rules" }, (m.matched_rules || []).join(" → ") || "none (fallback)"),
    ),
    el("ul", { class: "per-department" }, perDepartment),
    m.tags && m.tags.length ? el("p", {}, "Tags: ", m.tags.join(", ")) : null,
    (m.corrections || []).length
      ? el(
          "ul",
          { class: "corrections" },
          m.corrections.map((c) =>
            el(
              "li",
              {},
              `${c.field}: ${JSON.stringify(c.previous)} → ${JSON.stringify(c.value)} by ${c.actor} `,
              time(c.created_at, { ago: true }),
            ),
          ),
        )
      : null,
  );
}

function replies(m) {
  if (!(m.replies || []).length) return null;
  return section(
    "Replies given",
    "replies-title",
    el(
      "ol",
      { class: "replies" },
      m.replies.map((r) =>
        el(
          "li",
          {},
          el(
            "p",
            { class: "meta" },
            `${departmentName(r.department)} · ${r.author} · ${r.channel || "no channel"} · `,
            time(r.created_at, { ago: true }),
            r.url ? [" · ", link(r.url, "where it was posted")] : null,
          ),
          el("p", { class: "reply-text" }, r.text),
        ),
      ),
    ),
  );
}

function brief(b, canOpen) {
  const title = titleOf(b);
  return el(
    "li",
    { class: "brief", data: { id: b.id } },
    canOpen ? route(`mentions/${b.id}`, title) : el("span", {}, title),
    el(
      "span",
      { class: "meta" },
      ` · ${b.source_name || b.source_id}${b.author ? ` · ${b.author}` : ""} · `,
      time(b.published_at, { ago: true }),
    ),
    b.departments && b.departments.length
      ? el("span", { class: "meta" }, ` · ${b.departments.map(departmentName).join(", ")}`)
      : null,
    " ",
    link(b.url, "source", "small"),
  );
}

function thread(t, canOpen) {
  if (!t) return null;
  const parts = [];
  if (t.parent)
    parts.push(
      el("p", {}, "In answer to: "),
      el("ul", { class: "thread parent" }, brief(t.parent, canOpen(t.parent))),
    );
  if (t.siblings.length)
    parts.push(
      el("p", {}, "Other comments on it:"),
      el(
        "ol",
        { class: "thread siblings" },
        t.siblings.map((b) => brief(b, canOpen(b))),
      ),
    );
  if (t.replies.length)
    parts.push(
      el("p", {}, "Comments answering it:"),
      el(
        "ol",
        { class: "thread replies-to" },
        t.replies.map((b) => brief(b, canOpen(b))),
      ),
    );
  if (t.truncated) parts.push(el("p", { class: "meta" }, "(more not shown)"));
  return section(
    "Thread",
    "thread-title",
    parts.length ? parts : el("p", { class: "meta" }, "No post or comments around it that you may see."),
  );
}

function duplicates(d, canOpen) {
  if (!d || (!d.original && d.duplicates.length === 0)) return null;
  return section(
    "Near-duplicates",
    "dups-title",
    d.original
      ? [el("p", {}, "This repeats:"), el("ul", { class: "dups" }, brief(d.original, canOpen(d.original)))]
      : null,
    d.duplicates.length
      ? [
          el("p", {}, "Copies stored (not routed):"),
          el(
            "ul",
            { class: "dups" },
            d.duplicates.map((b) => brief(b, canOpen(b))),
          ),
        ]
      : null,
  );
}

function activity(m) {
  const rows = (m.activity || []).map((a) => {
    const detail = Object.entries(a.detail || {})
      .filter(([, v]) => v !== null && v !== "" && typeof v !== "object")
      .map(([k, v]) => `${k.replace(/_/g, " ")}: ${v}`)
      .join("; ");
    return el(
      "li",
      {},
      time(a.at),
      " ",
      el("strong", {}, a.actor),
      ` ${a.action} (${departmentName(a.department)})`,
      a.from_status || a.to_status ? ` ${a.from_status || "–"} → ${a.to_status || "–"}` : "",
      detail ? el("span", { class: "detail" }, ` – ${detail}`) : null,
    );
  });
  return section(
    "Activity",
    "activity-title",
    rows.length ? el("ol", { class: "activity" }, rows) : el("p", { class: "meta" }, "Nothing yet."),
  );
}

export class MentionView {
  constructor({ api, me, pane, work }) {
    Object.assign(this, { api, me, pane, work });
    this.current = null;
  }

  /** Load and show mention `id`; returns the mention (or null when it cannot be shown). */
  async open(id, { focus = true } = {}) {
    const [detail, related, copies] = await Promise.allSettled([
      this.api.get(`/v1/mentions/${encodeURIComponent(id)}`),
      this.api.get(`/v1/mentions/${encodeURIComponent(id)}/thread`, { limit: 20 }),
      this.api.get(`/v1/mentions/${encodeURIComponent(id)}/near-duplicates`, { limit: 20 }),
    ]);
    if (detail.status === "rejected") {
      const error = detail.reason;
      if (!(error instanceof ApiError)) throw error;
      this.showMissing(id, error);
      return null;
    }
    this.current = detail.value;
    this.render(detail.value, related.value, copies.value);
    if (focus) this.pane.querySelector("#mention-title").focus();
    return detail.value;
  }

  showMissing(id, error) {
    this.current = null;
    clear(this.pane);
    const text =
      error.status === 404
        ? "This mention does not exist, or it is not one of your departments'."
        : error.message;
    this.pane.append(
      el("h2", { attrs: { id: "mention-title", tabindex: "-1" } }, "Mention not available"),
      el("p", {}, text),
    );
  }

  render(m, related, copies) {
    const labels = labelsOf(m.classification);
    const index = evidenceIndex(labels);
    const canOpen = (b) => this.me.read.length === 5 || (b.departments || []).length > 0;
    clear(this.pane);
    const head = header(m);
    head.querySelector("#mention-title").append(highlight(titleOf(m), index));
    const conflict = el("div", {
      class: "conflict",
      attrs: { id: "conflict", role: "alert", "aria-labelledby": "conflict-title" },
      hidden: true,
    });
    const work = section(
      "Assignments",
      "assignments-title",
      el(
        "div",
        { class: "assignments" },
        (m.assignments || []).map((a) => assignmentCard(a, this.work)),
      ),
    );
    append(
      this.pane,
      el("p", { class: "back" }, route("mentions", "← Back to the list")),
      head,
      conflict,
      el("div", { class: "text", attrs: { "aria-label": "Text" } }, highlight(m.text, index)),
      work,
      section("Labels", "labels-title", labelList(labels, this.pane)),
      replies(m),
      routingTrail(m),
      thread(related, canOpen),
      duplicates(copies, canOpen),
      activity(m),
    );
  }

  /** The assignment the keyboard's c/a/r/e act on: in `department` if given, else the first the key may change. */
  target(department) {
    const m = this.current;
    if (!m) return null;
    const mine = (m.assignments || []).filter((a) => this.me.write.includes(a.department));
    return (
      mine.find((a) => a.department === department) ||
      mine.find((a) => a.status !== "reassigned") ||
      mine[0] ||
      null
    );
  }

  clear() {
    this.current = null;
    clear(this.pane);
    this.pane.append(el("p", { class: "placeholder" }, "Choose a mention (j/k to move, Enter to open)."));
  }
}
