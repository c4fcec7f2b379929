// The desk's only door to the server: the public REST API, with the user's key in the Authorization
// header (never in a URL: URLs end up in logs and histories).

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

/** The ETag the API gives an assignment, for If-Match. */
export function etagOf(assignment) {
  return `"${assignment.id}-${assignment.version}"`;
}

/** A query string: arrays repeat the parameter, empty values are left out. */
export function query(params = {}) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      if (v !== undefined && v !== null && v !== "") search.append(name, String(v));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export class Api {
  /**
   * @param {string} key the API key
   * @param {string} actor display name for changes (X-Actor); "" for the key's own name
   * @param {(message: string) => void} onUnauthorized called once when the key stops working (401)
   */
  constructor(key, actor, onUnauthorized) {
    this.key = key;
    this.actor = actor;
    this.onUnauthorized = onUnauthorized;
    this.dead = false;
  }

  headers(extra = {}) {
    const headers = { Authorization: `Bearer ${this.key}`, Accept: "application/json", ...extra };
    // Header values are ISO-8859-1; a name beyond it is sent percent-encoded rather than refused.
    if (this.actor) {
      headers["X-Actor"] = /^[\x20-\x7e\xa0-\xff]*$/.test(this.actor) ? this.actor : encodeURI(this.actor);
    }
    return headers;
  }

  async request(method, path, { params, body, etag, signal } = {}) {
    const headers = this.headers(etag ? { "If-Match": etag } : {});
    const init = { method, headers, signal, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path + query(params), init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, { detail: "the desk cannot reach the API (network or server down)" });
    }
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json().catch(() => null) : null;
    if (response.status === 401) {
      this.unauthorized((data && data.detail) || "the API key was not accepted");
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return { data, etag: response.headers.get("ETag"), status: response.status };
  }

  unauthorized(detail) {
    if (!this.dead) {
      this.dead = true;
      this.onUnauthorized(detail);
    }
  }

  async get(path, params) {
    return (await this.request("GET", path, { params })).data;
  }

  async post(path, body, etag) {
    return (await this.request("POST", path, { body, etag })).data;
  }
}
