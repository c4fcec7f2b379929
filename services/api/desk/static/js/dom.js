// Building the page from data without ever parsing it as markup.
//
// Everything the desk shows that came from a feed, a pushed post or another user goes through el() and
// text nodes: no innerHTML, no attribute named on..., and links only to http(s) URLs. The page's
// Content-Security-Policy also requires Trusted Types with no policy, so the browser itself refuses any
// string assigned to innerHTML and the like.

const SAFE_SCHEMES = new Set(["http:", "https:"]);

/** The URL when it is an absolute http(s) URL, else null (javascript:, data:, relative, garbage). */
export function safeHttpUrl(value) {
  if (typeof value !== "string" || value.length === 0 || value.length > 4096) return null;
  let parsed;
  try {
    parsed = new URL(value);
  } catch {
    return null;
  }
  return SAFE_SCHEMES.has(parsed.protocol) ? parsed.href : null;
}

/**
 * An element. `props`: class (string), text (string), attrs (name -> value; no on* handlers, no href or
 * src: see link()), data (dataset), hidden, on (event name -> listener). Children: nodes or strings
 * (strings become text nodes).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  if (props.class) node.className = props.class;
  if (props.text !== undefined && props.text !== null) node.textContent = String(props.text);
  for (const [name, value] of Object.entries(props.attrs || {})) {
    const lower = name.toLowerCase();
    if (lower.startsWith("on") || lower === "href" || lower === "src" || lower === "style") {
      throw new Error(`el(): refusing attribute ${name}`);
    }
    if (value === false || value === null || value === undefined) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const [name, value] of Object.entries(props.data || {})) node.dataset[name] = String(value);
  if (props.hidden) node.hidden = true;
  for (const [event, listener] of Object.entries(props.on || {})) node.addEventListener(event, listener);
  append(node, ...children);
  return node;
}

/** Append nodes and strings (as text) to `node`, skipping null and false. */
export function append(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

/** A link that opens `url` in a new tab when it is http(s); otherwise the text, marked as no link. */
export function link(url, text, cls = "") {
  const safe = safeHttpUrl(url);
  if (safe === null) {
    return el("span", { class: `nolink ${cls}`.trim(), attrs: { title: "not an http(s) link" } }, text);
  }
  const a = el("a", { class: cls, attrs: { target: "_blank", rel: "noopener noreferrer nofollow" } }, text);
  a.href = safe;
  return a;
}

/** An in-page link to a route of the desk (#/...). */
export function route(path, text, cls = "") {
  const a = el("a", { class: cls }, text);
  a.href = `#/${path.split("/").map(encodeURIComponent).join("/")}`;
  return a;
}

export function byId(id) {
  const node = document.getElementById(id);
  if (node === null) throw new Error(`no #${id} in the page`);
  return node;
}

const UNITS = [
  [86400, "d"],
  [3600, "h"],
  [60, "min"],
];

/** 5400 → "1 h 30 min"; under a minute → "42 s". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  let rest = Math.max(0, Math.round(seconds));
  if (rest < 60) return `${rest} s`;
  const parts = [];
  for (const [size, unit] of UNITS) {
    if (rest >= size && parts.length < 2) {
      parts.push(`${Math.floor(rest / size)} ${unit}`);
      rest %= size;
    }
  }
  return parts.join(" ");
}

/** "3 h ago", "in 20 min" relative to now. */
export function relative(iso) {
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return "";
  const delta = (at - Date.now()) / 1000;
  return delta < 0 ? `${duration(-delta)} ago` : `in ${duration(delta)}`;
}

/** A <time> with the local date and time, the ISO value in datetime. */
export function time(iso, { ago = false } = {}) {
  const at = new Date(iso);
  if (Number.isNaN(at.getTime())) return el("span", { text: "–" });
  const shown = ago ? relative(iso) : at.toLocaleString();
  return el("time", { attrs: { datetime: at.toISOString(), title: at.toLocaleString() } }, shown);
}

export function percent(value) {
  return typeof value === "number" ? `${Math.round(value * 100)} %` : "–";
}

/** A short message in the page's live region (read out by screen readers). */
export function announce(message, kind = "info") {
  const box = byId("status");
  clear(box);
  box.append(el("p", { class: `toast ${kind}` }, message));
  clearTimeout(announce.timer);
  announce.timer = setTimeout(() => clear(box), kind === "error" ? 10000 : 4000);
}
