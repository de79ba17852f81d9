// The HTTP API client: every call the console makes goes through here, to
// the public /api/v1 paths, with the operator token from sessionStorage as
// `Authorization: Bearer …`. The token never goes into a URL.

const KEY = "tributary.token";
const BASE = "/api/v1";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  sessionStorage.setItem(KEY, t);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

/** An API error: the problem+json the server sent, or what went wrong. */
export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem?.detail || problem?.title || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.problem = problem || {};
  }
  /** "field: reason" lines from the problem's violations and quotas. */
  details() {
    const v = [...(this.problem.violations || []), ...(this.problem.quota || [])];
    return v.map((x) => `${x.field}: ${x.description}`);
  }
}

/** Called with the error when the server refuses the token (401). */
let onUnauthorized = () => {};
export function whenUnauthorized(f) {
  onUnauthorized = f;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Calls the API; resolves to the parsed JSON (or null for 204). */
export async function call(method, path, { params, body, signal, auth } = {}) {
  const headers = { Accept: "application/json" };
  const t = auth ?? token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(BASE + path + query(params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { detail: `the server did not answer (${e.message})` });
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { detail: text.slice(0, 200) };
  }
  if (!resp.ok) {
    const err = new ApiError(resp.status, json);
    const retry = resp.headers.get("Retry-After");
    if (retry) err.retryAfter = Number(retry);
    if (resp.status === 401 && auth === undefined) onUnauthorized(err);
    throw err;
  }
  return json;
}

export const get = (path, params, signal) => call("GET", path, { params, signal });
export const post = (path, body, params) => call("POST", path, { body, params });
export const patch = (path, body, params) => call("PATCH", path, { body, params });
export const del = (path, params) => call("DELETE", path, { params });

/**
 * Follows a Server-Sent Events stream of the API with the token in a
 * header (EventSource cannot send one). Calls `onEvent(type, data, id)`
 * for each event; reconnects with Last-Event-ID after a drop, backing off
 * up to 30 s. Returns a function that stops it.
 */
export function follow(path, params, onEvent, onState = () => {}) {
  const ctl = new AbortController();
  let lastId = null;
  let delay = 1000;
  let stopped = false;
  (async () => {
    while (!stopped) {
      try {
        const headers = { Accept: "text/event-stream", Authorization: `Bearer ${token()}` };
        if (lastId) headers["Last-Event-ID"] = lastId;
        const resp = await fetch(BASE + path + query(params), { headers, signal: ctl.signal, cache: "no-store" });
        if (!resp.ok) {
          const problem = await resp.json().catch(() => null);
          const err = new ApiError(resp.status, problem);
          onState("error", err);
          if (resp.status === 401) {
            onUnauthorized(err);
            return;
          }
          if (resp.status < 500 && resp.status !== 429) return;
          if (err.retryAfter) delay = Math.max(delay, err.retryAfter * 1000);
        } else {
          onState("open");
          delay = 1000;
          await readEvents(resp.body, (type, data, id) => {
            if (id) lastId = id;
            onEvent(type, data, id);
          });
          onState("closed");
        }
      } catch (e) {
        if (stopped || e.name === "AbortError") return;
        onState("error", e);
      }
      if (stopped) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 30000);
    }
  })();
  return () => {
    stopped = true;
    ctl.abort();
  };
}

/** Parses text/event-stream from a body stream. */
async function readEvents(body, emit) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let type = "message";
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.search(/\r\n|\n|\r/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (data.length) emit(type, data.join("\n"), id);
        type = "message";
        data = [];
        id = null;
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let v = colon < 0 ? "" : line.slice(colon + 1);
      if (v.startsWith(" ")) v = v.slice(1);
      if (field === "event") type = v;
      else if (field === "data") data.push(v);
      else if (field === "id") id = v;
    }
    if (buf.length > 1 << 20) throw new Error("an event larger than 1 MiB");
  }
}
