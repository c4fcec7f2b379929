// The signed-in desk: the views (#/mentions[/id], #/sources, #/rules), the queues and the list kept live
// from the event stream, and the keyboard.

import { bindDryRun, showAlerts, showRules, showSources } from "./admin.js";
import { ApiError } from "./api.js";
import { announce, byId, clear, el } from "./dom.js";
import { fillOptions, readFilters, setFilter } from "./filters.js";
import { MentionList } from "./list.js";
import { MentionView } from "./mention.js";
import { renderQueues } from "./queues.js";
import { Stream } from "./stream.js";
import { Work } from "./work.js";

const QUEUES_EVERY_MS = 30000;
const ALERTS_EVERY_MS = 60000;
const LIVE_FETCH_TRIES = 4;
const MOVES = { j: 1, k: -1 };
const ACTIONS = { c: "claim", a: "acknowledge", r: "respond", e: "reassign" };

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class Desk {
  constructor(api, me) {
    this.api = api;
    this.me = me;
    this.form = byId("filters");
    this.list = new MentionList({
      api,
      list: byId("list"),
      more: byId("more"),
      live: byId("live"),
      empty: byId("empty"),
    });
    this.work = new Work({ api, me, reload: (action) => this.refreshOpen(action) });
    this.view = new MentionView({ api, me, pane: byId("detail"), work: this.work });
    this.stream = new Stream(
      api,
      (type, payload) => this.onEvent(type, payload),
      (state) => this.onStreamState(state),
    );
    this.seen = new Set();
    this.timers = [];
    this.listeners = [];
  }

  async start() {
    byId("nav-rules").hidden = !this.me.admin;
    byId("dryrun-area").hidden = !this.me.admin;
    byId("view-rules").hidden = true;
    this.listen(window, "hashchange", () => this.route());
    this.listen(document, "keydown", (event) => this.onKey(event));
    this.listen(this.form, "change", () => this.filtersChanged());
    this.listen(this.form, "reset", () => this.filtersChanged());
    this.listen(this.form, "submit", (event) => {
      event.preventDefault();
      this.filtersChanged();
    });
    if (this.me.admin && !this.dryRunBound) {
      bindDryRun(this.api);
      this.dryRunBound = true;
    }
    fillOptions(this.form, { departments: this.me.read });
    await Promise.all([
      this.refreshQueues(),
      this.list.reload(readFilters(this.form)),
      this.loadOptions(),
      this.refreshAlerts(),
    ]);
    this.timers.push(setInterval(() => this.refreshQueues(), QUEUES_EVERY_MS));
    this.timers.push(setInterval(() => this.refreshAlerts(), ALERTS_EVERY_MS));
    // A key that reads no department (push only) has no stream to follow.
    if (this.me.read.length) this.stream.start();
    else this.onStreamState("none");
    await this.route();
    document.body.dataset.ready = "true";
  }

  stop() {
    this.stream.stop();
    for (const timer of this.timers) clearInterval(timer);
    for (const [target, type, listener] of this.listeners) target.removeEventListener(type, listener);
    document.body.dataset.ready = "false";
  }

  listen(target, type, listener) {
    target.addEventListener(type, listener);
    this.listeners.push([target, type, listener]);
  }

  async guarded(work) {
    try {
      return await work();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.status !== 401) announce(error.message, "error");
      return null;
    }
  }

  loadOptions() {
    return this.guarded(async () => {
      const [taxonomy, sources] = await Promise.all([
        this.api.get("/v1/taxonomy"),
        this.api.get("/v1/sources"),
      ]);
      fillOptions(this.form, { topics: Object.keys(taxonomy.topics).sort(), sources: sources.items });
    });
  }

  refreshQueues() {
    return this.guarded(async () => {
      const queues = await this.api.get("/v1/queues");
      const active = readFilters(this.form).department || null;
      renderQueues(byId("queues"), queues, active, (department) => this.pickDepartment(department));
    });
  }

  refreshAlerts() {
    return this.guarded(() => showAlerts(this.api, this.me, byId("alerts")));
  }

  pickDepartment(department) {
    setFilter(this.form, "department", department);
    this.filtersChanged();
  }

  filtersChanged() {
    const active = Object.keys(readFilters(this.form)).filter((name) => name !== "q").length;
    byId("filter-count").textContent = active ? `(${active} set)` : "";
    clearTimeout(this.filterTimer);
    this.filterTimer = setTimeout(() => {
      this.guarded(() => this.list.reload(readFilters(this.form)));
      this.refreshQueues();
    }, 150);
  }

  /** Show the view the address names. */
  async route() {
    if (window.location.hash === this.shown) return; // already on it (set by the keyboard, then the event)
    this.shown = window.location.hash;
    const path = window.location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    const view = path[0] || "mentions";
    if (!["mentions", "sources", "rules"].includes(view)) return; // e.g. the skip link's #main
    for (const name of ["mentions", "sources", "rules"]) {
      byId(`view-${name}`).hidden = name !== view;
      byId(`nav-${name}`).setAttribute("aria-current", name === view ? "page" : "false");
    }
    if (view === "sources") return this.guarded(() => showSources(this.api, byId("view-sources")));
    if (view === "rules") return this.showRules();
    const id = path[1];
    document.body.classList.toggle("showing-detail", Boolean(id));
    if (!id) {
      this.view.clear();
      this.list.markOpen(null);
      return;
    }
    const mention = await this.guarded(() => this.view.open(id));
    this.list.markOpen(id);
    if (mention) document.title = `${mention.title || "Mention"} – Mention Router desk`;
  }

  showRules() {
    const container = byId("rules-table");
    if (!this.me.admin) {
      clear(container);
      container.append(el("p", {}, "The routing rules are for admin keys."));
      return null;
    }
    return this.guarded(() => showRules(this.api, container));
  }

  /** After a change: the open mention again, its row in the list, the counts. */
  async refreshOpen(action) {
    const current = this.view.current;
    if (!current) return;
    const mention = await this.guarded(() => this.view.open(current.id, { focus: false }));
    if (mention) this.list.update(mention);
    this.refreshQueues();
    const again = action && byId("detail").querySelector(`button.action-${action}`);
    if (again) again.focus();
    else byId("mention-title").focus();
  }

  onStreamState(state) {
    const label = {
      live: "Live",
      connecting: "Connecting…",
      down: "Offline: retrying",
      none: "No departments to follow",
    }[state];
    const box = byId("live-state");
    box.textContent = label;
    box.className = `live-state ${state}`;
  }

  onEvent(type, payload) {
    clearTimeout(this.queueTimer);
    this.queueTimer = setTimeout(() => this.refreshQueues(), 500);
    const id = type === "mention.routed" ? payload.mention && payload.mention.id : payload.mention_id;
    if (typeof id !== "string") return;
    if (this.view.current && this.view.current.id === id) this.refreshOpen();
    if (type === "mention.routed" && !this.seen.has(id)) {
      this.seen.add(id); // one event per department it reached: the mention arrives once
      this.fetchArrived(id);
    }
  }

  /** The routed mention as the API gives it (the event may outrun the API's reads: retried briefly). */
  async fetchArrived(id) {
    for (let attempt = 0; attempt < LIVE_FETCH_TRIES; attempt += 1) {
      try {
        const mention = await this.api.get(`/v1/mentions/${encodeURIComponent(id)}`);
        if (this.list.arrived(mention)) announce(`New mention: ${mention.title || mention.source_name}`);
        return;
      } catch (error) {
        if (!(error instanceof ApiError) || error.status !== 404) return;
        await sleep(500 * (attempt + 1));
      }
    }
  }

  onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.defaultPrevented) return;
    const target = event.target;
    const typing =
      target instanceof HTMLElement && target.closest("input, textarea, select, [contenteditable]");
    if (typing || document.querySelector("dialog[open]")) return;
    const key = event.key;
    if (key === "/") {
      event.preventDefault();
      window.location.hash = "#/mentions";
      this.form.elements.namedItem("q").focus();
    } else if (key in MOVES) {
      event.preventDefault();
      this.list.move(MOVES[key]);
    } else if (
      key === "Enter" &&
      !(target instanceof HTMLAnchorElement || target instanceof HTMLButtonElement)
    ) {
      const id = this.list.selectedId();
      if (id) window.location.hash = `#/mentions/${encodeURIComponent(id)}`;
    } else if (key in ACTIONS) {
      event.preventDefault();
      this.keyAction(ACTIONS[key]);
    } else if (key === "?") {
      byId("dialog-help").showModal();
    } else if (key === "Escape" && this.view.current) {
      window.location.hash = "#/mentions";
    }
  }

  /** c/a/r/e on the open mention (or the selected one, opened first). */
  async keyAction(action) {
    const selected = this.list.selectedId();
    if (!this.view.current && selected) {
      window.location.hash = `#/mentions/${encodeURIComponent(selected)}`;
      await this.route();
    }
    const target = this.view.target(readFilters(this.form).department);
    if (!target) {
      announce("Open a mention of a department your key may change first.", "error");
      return;
    }
    await this.work.start(action, target);
  }
}
