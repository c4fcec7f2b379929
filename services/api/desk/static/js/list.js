// The mentions list: one page at a time (GET /v1/mentions, newest first, by cursor), live mentions put
// on top with a marker, and a selection that j/k move and Enter opens.

import { matches } from "./filters.js";
import { append, clear, el, route, time } from "./dom.js";
import { departmentName } from "./queues.js";

const PAGE = 50;

export function titleOf(mention) {
  const title = (mention.title || "").trim();
  if (title) return title;
  const text = (mention.text || mention.excerpt || "").trim();
  return text ? `${text.slice(0, 120)}${text.length > 120 ? "…" : ""}` : "(no title)";
}

/** One assignment as a chip: department, priority, status, overdue, who holds it. */
export function assignmentChip(a) {
  const parts = [departmentName(a.department), a.priority, a.status];
  if (a.overdue) parts.push("overdue");
  if (a.assignee) parts.push(`claimed by ${a.assignee}`);
  const cls = `chip status-${a.status} ${a.priority.toLowerCase()}${a.overdue ? " overdue" : ""}`;
  return el("span", { class: cls, data: { department: a.department } }, parts.join(" · "));
}

function item(mention, isNew) {
  const title = route(`mentions/${mention.id}`, titleOf(mention), "open");
  const meta = el(
    "p",
    { class: "meta" },
    el("span", { class: "source" }, mention.source_name || mention.source_id),
    mention.author ? el("span", { class: "author" }, mention.author) : null,
    time(mention.routed_at, { ago: true }),
    el("span", { class: `sentiment ${mention.sentiment}` }, mention.sentiment),
    el("span", { class: "intent" }, mention.intent),
  );
  const chips = el("p", { class: "chips" }, (mention.assignments || []).map(assignmentChip));
  return el(
    "li",
    { class: `item${isNew ? " new" : ""}`, data: { id: mention.id } },
    isNew ? el("span", { class: "badge-new" }, "New") : null,
    el("h3", {}, title),
    meta,
    chips,
  );
}

export class MentionList {
  constructor({ api, list, more, live, empty }) {
    Object.assign(this, { api, list, more, live, empty });
    this.filters = {};
    this.items = new Map(); // id -> mention
    this.cursor = null;
    this.selected = -1;
    this.pending = 0; // live mentions that may match but need a reload to know (a text query)
    this.generation = 0;
    this.more.addEventListener("click", () => this.loadMore());
  }

  async reload(filters = this.filters) {
    this.filters = filters;
    const generation = ++this.generation;
    this.list.setAttribute("aria-busy", "true");
    const page = await this.api.get("/v1/mentions", { ...filters, limit: PAGE });
    if (generation !== this.generation) return; // a newer reload won
    clear(this.list);
    this.items.clear();
    this.selected = -1;
    this.pending = 0;
    this.showPage(page);
    this.renderLive();
  }

  async loadMore() {
    if (!this.cursor) return;
    const generation = this.generation;
    this.more.disabled = true;
    try {
      const page = await this.api.get("/v1/mentions", { ...this.filters, limit: PAGE, cursor: this.cursor });
      if (generation === this.generation) this.showPage(page);
    } finally {
      this.more.disabled = false;
    }
  }

  showPage(page) {
    for (const mention of page.items) {
      if (this.items.has(mention.id)) continue;
      this.items.set(mention.id, mention);
      this.list.append(item(mention, false));
    }
    this.cursor = page.next_cursor;
    this.more.hidden = !this.cursor;
    this.empty.hidden = this.items.size > 0;
    this.list.setAttribute("aria-busy", "false");
  }

  /** A mention that just arrived: on top with a marker when it belongs here, else counted as pending. */
  arrived(mention) {
    const verdict = matches(mention, this.filters);
    if (verdict === false) return false;
    if (verdict === null) {
      this.pending += 1;
      this.renderLive();
      return false;
    }
    const old = this.list.querySelector(`li[data-id="${CSS.escape(mention.id)}"]`);
    if (old) old.remove();
    this.items.set(mention.id, mention);
    this.list.prepend(item(mention, true));
    this.selected = this.rows().findIndex((r) => r.classList.contains("selected"));
    this.empty.hidden = true;
    this.renderLive();
    return true;
  }

  /** Redraw one mention after a change (its assignments moved on). */
  update(mention) {
    const old = this.list.querySelector(`li[data-id="${CSS.escape(mention.id)}"]`);
    if (!old) return;
    this.items.set(mention.id, mention);
    const fresh = item(mention, old.classList.contains("new"));
    fresh.classList.toggle("selected", old.classList.contains("selected"));
    old.replaceWith(fresh);
  }

  renderLive() {
    clear(this.live);
    const fresh = this.list.querySelectorAll("li.new").length;
    if (fresh)
      append(this.live, el("span", { class: "badge-new" }, `${fresh} new`), " since you opened the list");
    if (this.pending) {
      const show = el(
        "button",
        { class: "link", attrs: { type: "button" }, on: { click: () => this.reload() } },
        `${this.pending} new mention${this.pending > 1 ? "s" : ""} may match the search: show`,
      );
      append(this.live, " ", show);
    }
  }

  rows() {
    return [...this.list.querySelectorAll("li.item")];
  }

  /** Move the selection by `delta` rows (j/k) and focus its link. */
  move(delta) {
    const rows = this.rows();
    if (rows.length === 0) return;
    const next = Math.min(rows.length - 1, Math.max(0, this.selected + delta));
    this.select(next, rows);
  }

  select(index, rows = this.rows()) {
    for (const row of rows) row.classList.remove("selected");
    this.selected = index;
    const row = rows[index];
    if (!row) return;
    row.classList.add("selected");
    row.querySelector("a.open").focus();
    row.scrollIntoView({ block: "nearest" });
  }

  selectedId() {
    const row = this.rows()[this.selected];
    return row ? row.dataset.id : null;
  }

  markOpen(id) {
    const rows = this.rows();
    const index = rows.findIndex((r) => r.dataset.id === id);
    for (const row of rows) row.classList.toggle("current", row.dataset.id === id);
    if (index >= 0) {
      for (const row of rows) row.classList.remove("selected");
      rows[index].classList.add("selected");
      this.selected = index;
    }
  }
}
