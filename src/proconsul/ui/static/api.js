// The HTTP API client: the token from local storage on every request, blocking
// queries for watches, and errors that keep Consul's message (a 403 names the
// missing permission).
const TOKEN_KEY = "proconsul:token";

export function token() { return localStorage.getItem(TOKEN_KEY) || ""; }
export function setToken(secret) {
  if (secret) localStorage.setItem(TOKEN_KEY, secret); else localStorage.removeItem(TOKEN_KEY);
}

export class APIError extends Error {
  constructor(status, text) { super(text || `HTTP ${status}`); this.status = status; }
}

function headers(extra = {}) {
  const out = { ...extra };
  const secret = token();
  if (secret) out["X-Consul-Token"] = secret;
  return out;
}

// One call; JSON in and out. Returns {body, index}.
export async function request(method, path, body, signal) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  if (!res.ok) throw new APIError(res.status, text.trim());
  let parsed = null;
  if (text) { try { parsed = JSON.parse(text); } catch { parsed = text; } }
  return { body: parsed, index: Number(res.headers.get("X-Consul-Index") || 0) };
}

export const get = (path, signal) => request("GET", path, undefined, signal).then(r => r.body);

// A blocking query kept open until `signal` aborts: calls onData(body) on each
// change and onError(err) on failures (then waits a little and goes on).
export async function watch(path, onData, onError, signal) {
  let index = 0;
  const sep = path.includes("?") ? "&" : "?";
  while (!signal.aborted) {
    try {
      const url = index ? `${path}${sep}index=${index}&wait=30s` : path;
      const res = await request("GET", url, undefined, signal);
      if (res.index < index) index = 0;        // the index went back: start over
      else if (res.index === index) continue;  // the wait ended with no change
      else index = res.index;
      onData(res.body);
    } catch (err) {
      if (signal.aborted) return;
      onError(err);
      index = 0;
      await new Promise(r => setTimeout(r, err.status === 403 ? 5000 : 1000));
    }
  }
}

// What the current token may do: [{Resource, Segment, Access}] -> [bool], asked
// before a page fetches anything it might not be allowed to read.
export async function authorize(checks) {
  const res = await request("POST", "/v1/internal/acl/authorize", checks);
  return res.body.map(r => r.Allow);
}
