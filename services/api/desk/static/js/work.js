// Working an assignment: claim, acknowledge, respond, resolve, dismiss, reopen, reassign. Every change
// is sent with the ETag of the assignment as shown (If-Match): when someone else changed it meanwhile
// the API answers 412, and the desk shows what changed and offers to reload instead of overwriting.

import { ApiError, etagOf } from "./api.js";
import { announce, byId, clear, el, relative, time } from "./dom.js";
import { departmentName } from "./queues.js";

const OPEN = new Set(["new", "acknowledged", "responded", "reopened"]);
const COMPARED = ["status", "assignee", "priority", "sla_due_at", "reassigned_to", "escalation_level"];

/** The actions the key may take on `a` in its state: [{action, label, key}]. */
export function actionsFor(a, me) {
  if (!me.write.includes(a.department)) return [];
  const open = OPEN.has(a.status);
  const actions = [];
  if (open) {
    const mine = a.assignee && a.assignee === me.actorName;
    if (!mine)
      actions.push({
        action: "claim",
        label: a.assignee ? `Take over from ${a.assignee}` : "Claim",
        key: "c",
      });
    if (a.assignee) actions.push({ action: "unclaim", label: "Release" });
  }
  if (a.status === "new" || a.status === "reopened")
    actions.push({ action: "acknowledge", label: "Acknowledge", key: "a" });
  if (open) {
    actions.push({ action: "respond", label: "Respond…", key: "r" });
    actions.push({ action: "resolve", label: "Resolve" });
    actions.push({ action: "dismiss", label: "Dismiss" });
    actions.push({ action: "reassign", label: "Reassign…", key: "e" });
  }
  if (a.status === "resolved" || a.status === "dismissed")
    actions.push({ action: "reopen", label: "Reopen" });
  return actions;
}

/** What differs between the assignment as shown and as it is now: [[field, before, after]]. */
export function changes(shown, now) {
  return COMPARED.filter((f) => String(shown[f] ?? "") !== String(now[f] ?? "")).map((f) => [
    f,
    shown[f],
    now[f],
  ]);
}

export class Work {
  /**
   * @param {{api: import("./api.js").Api, me: object, reload: (focusAction?: string) => Promise<void>}} deps
   */
  constructor({ api, me, reload }) {
    Object.assign(this, { api, me, reload });
    this.respondDialog = byId("dialog-respond");
    this.reassignDialog = byId("dialog-reassign");
    this.bindDialogs();
  }

  /** The buttons of one assignment. */
  buttons(a) {
    return actionsFor(a, this.me).map(({ action, label, key }) =>
      el(
        "button",
        {
          class: `action action-${action}`,
          attrs: { type: "button", "aria-keyshortcuts": key || false },
          data: { action, assignment: a.id },
          on: { click: () => this.start(action, a) },
        },
        label,
        key ? el("kbd", { attrs: { "aria-hidden": "true" } }, key) : null,
      ),
    );
  }

  /** Begin `action` on `a`: the ones that need input open their dialog. */
  start(action, a) {
    if (!actionsFor(a, this.me).some((x) => x.action === action)) {
      announce(
        `${action} is not possible on ${departmentName(a.department)}'s assignment (${a.status})`,
        "error",
      );
      return;
    }
    if (action === "respond") return this.openRespond(a);
    if (action === "reassign") return this.openReassign(a);
    const body =
      action === "claim"
        ? { force: Boolean(a.assignee) }
        : action === "unclaim"
          ? { force: true }
          : undefined;
    return this.send(action, a, body);
  }

  async send(action, a, body) {
    try {
      await this.api.post(`/v1/assignments/${a.id}/${action}`, body, etagOf(a));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.status === 412) return this.conflict(a);
      if (error.status === 401) return;
      announce(`${departmentName(a.department)}: ${error.message}`, "error");
      if (error.status === 409 || error.status === 404) await this.reload();
      return false;
    }
    announce(`${departmentName(a.department)}: ${action === "reassign" ? "reassigned" : `${action} done`}`);
    await this.reload(action);
    return true;
  }

  /** 412: show what changed since the assignment was shown, and offer to reload. */
  async conflict(shown) {
    const box = byId("conflict");
    clear(box);
    let now = null;
    try {
      now = await this.api.get(`/v1/assignments/${shown.id}`);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
    }
    const rows = now ? changes(shown, now) : [];
    box.append(
      el("h3", { attrs: { id: "conflict-title" } }, "Someone else changed this assignment"),
      el(
        "p",
        {},
        `${departmentName(shown.department)}'s assignment moved on while you were looking; nothing was changed by you.`,
      ),
      rows.length
        ? el(
            "dl",
            { class: "diff" },
            rows.map(([field, before, after]) => [
              el("dt", {}, field.replace(/_/g, " ")),
              el("dd", {}, el("del", {}, String(before ?? "–")), " → ", el("ins", {}, String(after ?? "–"))),
            ]),
          )
        : el("p", {}, "Its details are the same; only its version moved on."),
      el(
        "p",
        { class: "buttons" },
        el(
          "button",
          { class: "primary", attrs: { type: "button" }, on: { click: () => this.reload() } },
          "Reload it",
        ),
        el("button", { attrs: { type: "button" }, on: { click: () => (box.hidden = true) } }, "Dismiss"),
      ),
    );
    box.hidden = false;
    box.querySelector("button.primary").focus();
    return false;
  }

  openRespond(a) {
    const form = this.respondDialog.querySelector("form");
    form.reset();
    this.target = a;
    byId("respond-title").textContent = `Respond for ${departmentName(a.department)}`;
    this.respondDialog.showModal();
    form.elements.namedItem("text").focus();
  }

  openReassign(a) {
    const form = this.reassignDialog.querySelector("form");
    form.reset();
    this.target = a;
    const select = form.elements.namedItem("department");
    clear(select);
    for (const d of ["marketing", "pr", "support", "rnd", "product"]) {
      if (d !== a.department) select.append(el("option", { attrs: { value: d } }, departmentName(d)));
    }
    byId("reassign-title").textContent = `Reassign ${departmentName(a.department)}'s assignment`;
    this.reassignDialog.showModal();
    select.focus();
  }

  bindDialogs() {
    this.respondDialog.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(event.target);
      const body = { text: String(data.get("text")).trim() };
      const url = String(data.get("url") || "").trim();
      const channel = String(data.get("channel") || "").trim();
      if (url) body.url = url;
      if (channel) body.channel = channel;
      this.submitDialog(this.respondDialog, "respond", body);
    });
    this.reassignDialog.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      const data = new FormData(event.target);
      const body = {
        department: String(data.get("department")),
        reason: String(data.get("reason") || "").trim(),
      };
      this.submitDialog(this.reassignDialog, "reassign", body);
    });
    for (const dialog of [this.respondDialog, this.reassignDialog]) {
      dialog.querySelector("button.cancel").addEventListener("click", () => dialog.close());
    }
  }

  async submitDialog(dialog, action, body) {
    const error = dialog.querySelector(".form-error");
    error.textContent = "";
    try {
      await this.api.post(`/v1/assignments/${this.target.id}/${action}`, body, etagOf(this.target));
    } catch (failure) {
      if (!(failure instanceof ApiError)) throw failure;
      if (failure.status === 412) {
        dialog.close();
        return this.conflict(this.target);
      }
      error.textContent = failure.message; // e.g. 422: the link is not a URL
      return;
    }
    dialog.close();
    announce(
      `${departmentName(this.target.department)}: ${action === "respond" ? "response recorded" : `reassigned to ${departmentName(body.department)}`}`,
    );
    await this.reload(action);
  }
}

/** One assignment's card: state, assignee, SLA, escalation, and (from `work`) its buttons. */
export function assignmentCard(a, work) {
  const due = el(
    "span",
    { class: a.overdue ? "overdue" : "" },
    time(a.sla_due_at),
    ` (${relative(a.sla_due_at)})`,
  );
  const holder = a.assignee ? `claimed by ${a.assignee}` : "nobody has claimed it";
  return el(
    "article",
    { class: `assignment status-${a.status}`, data: { department: a.department, assignment: a.id } },
    el(
      "h4",
      {},
      `${departmentName(a.department)} · ${a.priority} · `,
      el("span", { class: "state" }, a.status),
    ),
    el(
      "dl",
      { class: "facts" },
      el("dt", {}, "Who"),
      el("dd", { class: "assignee" }, holder),
      el("dt", {}, "First response due"),
      el(
        "dd",
        {},
        a.first_response_at ? ["answered ", time(a.first_response_at)] : due,
        a.overdue ? " – overdue" : "",
      ),
      a.escalation_level ? [el("dt", {}, "Escalated"), el("dd", {}, `${a.escalation_level}×`)] : null,
      a.reassigned_to ? [el("dt", {}, "Reassigned to"), el("dd", {}, departmentName(a.reassigned_to))] : null,
      el("dt", {}, "Routed by"),
      el("dd", {}, (a.rules || []).join(", ") || "–"),
    ),
    el("p", { class: "buttons" }, work.buttons(a)),
  );
}
