// Who is signed in: the key lives in sessionStorage (this tab only, gone when it closes), never in a
// cookie (nothing is sent without the page asking) and never in the address bar for longer than it
// takes to read it from a sign-in link (#key=...; a fragment never reaches the server or its logs).

const STORE = "mention-router.desk";
const KEY_SHAPE = /^mr_[0-9a-f]{8}_[A-Za-z0-9_-]{20,100}$/;

export function plausibleKey(key) {
  return KEY_SHAPE.test(key);
}

/** The key of a sign-in link (#key=...), removed from the address bar and the history entry at once. */
export function takeKeyFromAddress() {
  const fragment = window.location.hash.replace(/^#/, "");
  if (!fragment.startsWith("key=")) return null;
  const params = new URLSearchParams(fragment);
  history.replaceState(null, "", window.location.pathname + window.location.search);
  const key = (params.get("key") || "").trim();
  return key || null;
}

export function load() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
    return saved && typeof saved.key === "string" ? saved : null;
  } catch {
    return null;
  }
}

export function save(session) {
  sessionStorage.setItem(STORE, JSON.stringify({ key: session.key, actor: session.actor || "" }));
}

export function forget() {
  sessionStorage.removeItem(STORE);
}
