// The HTTP API client: the token from local storage on every request, one
// event stream per view for freshness, and errors that keep Consul's message (a 403 names the
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

// Open a Server-Sent Events stream (fetch, not EventSource, so the token goes in
// a header) and call onData(object) for each `data:` message until it ends.
export async function stream(path, onOpen, onData, signal) {
  const res = await fetch(path, { headers: headers(), signal });
  if (!res.ok) throw new APIError(res.status, (await res.text()).trim());
  onOpen();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, cut); buf = buf.slice(cut + 2);
      const data = chunk.split("\n").filter(l => l.startsWith("data: ")).map(l => l.slice(6)).join("");
      if (data) onData(JSON.parse(data));
    }
  }
  throw new Error("the stream ended");
}

// Follow the reads a view shows over one connection (GET /v1/agent/watch): the
// agent says which paths changed for this token, and onChange(Set of paths)
// reads them again with plain requests. Calls never overlap: changes that
// arrive meanwhile are gathered for the next call. Every path counts as changed
// when the stream (re)opens. A broken stream reopens after half a second.
export async function follow(paths, onChange, onError, signal) {
  const url = "/v1/agent/watch?" + paths.map(p => `path=${encodeURIComponent(p)}`).join("&");
  let pending = new Set(), running = false;
  const run = async () => {
    if (running) return;
    running = true;
    while (pending.size && !signal.aborted) {
      const batch = pending; pending = new Set();
      try { await onChange(batch); } catch (err) { if (!signal.aborted) onError(err); }
    }
    running = false;
  };
  while (!signal.aborted) {
    try {
      // A refused read comes as {Path, Status, Error}: reading it again shows the refusal.
      await stream(url, () => {}, event => { pending.add(event.Path); run(); }, signal);
    } catch (err) {
      if (signal.aborted) return;
      onError(err);
      await new Promise(r => setTimeout(r, err.status === 403 ? 5000 : 500));
    }
  }
}

// What the current token may do: [{Resource, Segment, Access}] -> [bool], asked
// before a page fetches anything it might not be allowed to read.
export async function authorize(checks) {
  const res = await request("POST", "/v1/internal/acl/authorize", checks);
  return res.body.map(r => r.Allow);
}
