// The desk's modules in the browser that runs them, on inputs the stacks do not produce by themselves
// (tests/e2e/test_desk.py evaluates this function in a page of the desk and checks what it returns).
async () => {
  const dom = await import("/desk/js/dom.js");
  const ev = await import("/desk/js/evidence.js");
  const stream = await import("/desk/js/stream.js");
  const filters = await import("/desk/js/filters.js");
  const work = await import("/desk/js/work.js");
  const admin = await import("/desk/js/admin.js");
  const urls = [
    "https://a.example/x",
    "http://a.example",
    "javascript:alert(1)",
    " javascript:alert(1)",
    "JAVASCRIPT:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<b>x</b>",
    "//evil.example/x",
    "/relative",
    "vbscript:x",
    "",
    null,
  ];
  const phrases = [
    "word:wifi",
    "term:dark mode",
    "negated:fine=-0.50",
    "emoticon::(=-0.40",
    "model:m p=0.91",
    "reach:influence=2",
    "stopwords:en=12",
    "cue:everyone",
    "lexicon:compound=+0.345 (3 hits)",
  ];
  const index = ev.evidenceIndex([
    { kind: "topic", value: "x", evidence: ["term:a", "term:dark mode", "word:<b>"] },
  ]);
  const marked = ev.highlight("A dark mode, a banana, <b> and Dark Mode.", index);
  const box = document.createElement("div");
  box.append(marked);
  const [events, rest] = stream.parseEvents(
    'id: 1\nevent: mention.routed\ndata: {"a":\ndata: 1}\n\n: keep-alive\n\nid: 2\r\ndata: {"b"',
  );
  const a = { id: 7, version: 3, department: "support", status: "new", assignee: "Kim", priority: "P2" };
  const me = { write: ["support"], actorName: "Sam" };
  const actions = (x) => work.actionsFor(x, me).map((y) => y.action);
  const m = {
    routed_at: "2025-06-01T10:00:00Z",
    topics: ["bug"],
    sentiment: "negative",
    intent: "complaint",
    kind: "post",
    source_id: "s",
    language: "en",
    assignments: [
      {
        department: "support",
        status: "new",
        priority: "P2",
        first_response_at: null,
        assignee: "Kim",
        sla_due_at: "2000-01-01T00:00:00Z",
      },
    ],
  };
  const alerts = document.createElement("div");
  const api = {
    get: async () => ({
      items: [
        {
          id: 1,
          topic: "<img src=x onerror=alert(1)>",
          department: "support",
          count: 40,
          ratio: 8,
          baseline: 5,
          window_start: "2026-12-07T08:00:00Z",
        },
      ],
    }),
    post: async () => ({}),
  };
  await admin.showAlerts(api, { write: [] }, alerts);
  const src = (name, failures, ok, enabled = true) => ({
    name,
    consecutive_failures: failures,
    last_success_at: ok ? "2026-12-07T08:00:00Z" : null,
    enabled,
  });
  const sources = [
    src("b ok", 0, true),
    src("a new", 0, false),
    src("c off", 0, true, false),
    src("d failing", 2, true),
    src("e failing", 5, false),
  ]
    .sort(admin.sourceOrder)
    .map((s) => s.name);
  return {
    urls: urls.map((u) => dom.safeHttpUrl(u)),
    phrases: phrases.map((p) => ev.phraseOf(p)),
    marks: [...box.querySelectorAll("mark")].map((x) => x.textContent),
    markedText: box.textContent,
    markedElements: box.querySelectorAll("b").length,
    events,
    rest,
    actionsNew: actions(a),
    actionsMine: actions({ ...a, assignee: "Sam" }),
    actionsResolved: actions({ ...a, status: "resolved" }),
    actionsReadOnly: work.actionsFor({ ...a, department: "pr" }, me).length,
    changes: work.changes(a, { ...a, status: "acknowledged", version: 4, assignee: null }),
    matches: [
      filters.matches(m, {}),
      filters.matches(m, { department: "support", overdue: "true" }),
      filters.matches(m, { department: "pr" }),
      filters.matches(m, { topic: "praise" }),
      filters.matches(m, { q: "x" }),
      filters.matches(m, { status: "new", priority: "P2", sentiment: "negative", language: "en" }),
      filters.matches(m, { assignee: "Kim" }),
      filters.matches({ ...m, author: "Ana Lima" }, { author: "ana lima" }),
      filters.matches(m, { since: "2026-01-01T00:00:00.000Z" }),
    ],
    alertText: alerts.textContent,
    alertImages: alerts.querySelectorAll("img").length,
    alertButtons: alerts.querySelectorAll("button").length,
    sources,
    elRefuses: (() => {
      try {
        dom.el("a", { attrs: { onclick: "x" } });
        return false;
      } catch {
        return true;
      }
    })(),
    linkOfJs: dom.link("javascript:alert(1)", "x").tagName,
    linkOfHttps: dom.link("https://a.example/", "x").getAttribute("rel"),
  };
};
