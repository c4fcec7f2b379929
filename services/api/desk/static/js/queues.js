// The departments' queues (GET /v1/queues): open, overdue and P1 counts, the oldest open assignment's
// age and the median time to first response. A card is a button: it filters the list to its department.

import { clear, duration, el } from "./dom.js";

export const DEPARTMENT_NAMES = {
  marketing: "Marketing",
  pr: "PR",
  support: "Support",
  rnd: "R&D",
  product: "Product",
};

export function departmentName(department) {
  return DEPARTMENT_NAMES[department] || department;
}

function figure(label, value, cls = "") {
  return el("div", { class: `figure ${cls}`.trim() }, el("dt", { text: label }), el("dd", { text: value }));
}

function card(queue, active, onPick) {
  const p1 = (queue.open_by_priority && queue.open_by_priority.P1) || 0;
  const button = el(
    "button",
    {
      class: `queue${active ? " active" : ""}`,
      attrs: { type: "button", "aria-pressed": active ? "true" : "false" },
      data: { department: queue.department },
      on: { click: () => onPick(active ? null : queue.department) },
    },
    el("h2", { text: departmentName(queue.department) }),
    el(
      "dl",
      {},
      figure("Open", String(queue.open), "open"),
      figure("Overdue", String(queue.overdue), queue.overdue > 0 ? "overdue alarm" : "overdue"),
      figure("P1", String(p1), p1 > 0 ? "p1 alarm" : "p1"),
      figure("Oldest open", duration(queue.oldest_open_age_s), "oldest"),
      figure("Median first response", duration(queue.median_first_response_s), "median"),
    ),
  );
  button.setAttribute(
    "aria-label",
    `${departmentName(queue.department)}: ${queue.open} open, ${queue.overdue} overdue, ${p1} P1` +
      (active ? " (filtering the list; press to show every department)" : " (press to filter the list)"),
  );
  return button;
}

/** Draw the cards; `active` is the department the list is filtered to (or null). */
export function renderQueues(container, queues, active, onPick) {
  clear(container);
  const cards = (queues.departments || []).map((q) => card(q, q.department === active, onPick));
  container.append(...cards);
  container.setAttribute("aria-busy", "false");
}
