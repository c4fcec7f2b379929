// GET /v1/stream read with fetch() and a streaming reader rather than EventSource: EventSource cannot
// send headers, and the key must not travel in the URL. Reconnects by itself, resuming after the last
// event id it received (Last-Event-ID), so nothing is missed across a dropped connection.

import { ApiError } from "./api.js";

const RETRY_MS = 3000;
const MAX_RETRY_MS = 30000;

/** Split a buffer of SSE text into complete events; returns [events, rest]. */
export function parseEvents(buffer) {
  const events = [];
  const blocks = buffer.replace(/\r\n?/g, "\n").split("\n\n");
  const rest = blocks.pop();
  for (const block of blocks) {
    const event = { id: null, type: "message", data: [] };
    for (const line of block.split("\n")) {
      if (line === "" || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") event.id = value;
      else if (field === "event") event.type = value;
      else if (field === "data") event.data.push(value);
    }
    events.push({ id: event.id, type: event.type, data: event.data.join("\n") });
  }
  return [events, rest];
}

export class Stream {
  /**
   * @param {import("./api.js").Api} api
   * @param {(type: string, payload: object) => void} onEvent a routed or escalated mention
   * @param {(state: "live" | "connecting" | "down") => void} onState
   */
  constructor(api, onEvent, onState) {
    this.api = api;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastId = null;
    this.controller = null;
    this.stopped = false;
    this.retry = RETRY_MS;
  }

  start() {
    this.stopped = false;
    this.loop();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    while (!this.stopped && !this.api.dead) {
      this.onState("connecting");
      try {
        await this.readOnce();
        this.retry = RETRY_MS; // a stream that ended cleanly (a restart, a re-check): come back soon
      } catch (error) {
        if (this.stopped || error.name === "AbortError") return;
        if (error instanceof ApiError && error.status === 401) return;
        this.retry = Math.min(this.retry * 2, MAX_RETRY_MS);
      }
      if (this.stopped || this.api.dead) return;
      this.onState("down");
      await new Promise((resolve) => setTimeout(resolve, this.retry));
    }
  }

  async readOnce() {
    this.controller = new AbortController();
    const headers = this.api.headers({ Accept: "text/event-stream" });
    if (this.lastId) headers["Last-Event-ID"] = this.lastId;
    const response = await fetch("/v1/stream", {
      headers,
      signal: this.controller.signal,
      cache: "no-store",
      credentials: "omit",
    });
    if (response.status === 401) {
      const problem = await response.json().catch(() => ({}));
      this.api.unauthorized(problem.detail || "the API key was not accepted");
      throw new ApiError(401, problem);
    }
    if (response.status === 422) this.lastId = null; // an id of another stream: start afresh
    if (!response.ok || !response.body) throw new ApiError(response.status, null);
    this.onState("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      let events;
      [events, buffer] = parseEvents(buffer + value);
      for (const event of events) this.dispatch(event);
    }
  }

  dispatch(event) {
    if (event.id !== null) this.lastId = event.id;
    if (!event.data) return;
    let payload;
    try {
      payload = JSON.parse(event.data);
    } catch {
      return;
    }
    this.onEvent(event.type, payload);
  }
}
