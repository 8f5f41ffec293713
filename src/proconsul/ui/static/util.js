// Small DOM helpers shared by the views.
export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, c => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

export function errorBox(err) {
  const text = err && err.status === 403
    ? `Not allowed with this token (403): ${err.message}` : `Error: ${err && err.message}`;
  return `<p class="error" role="alert">${esc(text)}</p>`;
}

export function announce(text) {
  const el = document.getElementById("announce");
  if (el) el.textContent = text;
}

// The worst of a list of check statuses, as Consul ranks them.
export function worst(statuses) {
  if (statuses.includes("critical")) return "critical";
  if (statuses.includes("warning")) return "warning";
  return "passing";
}

export function badges(list) {
  return (list || []).map(t => `<span class="badge">${esc(t)}</span>`).join("");
}

// A base class for views: a view starts its watches in start() and every one
// stops with the AbortController when the view leaves the page.
export class View extends HTMLElement {
  connectedCallback() {
    this.abort = new AbortController();
    this.start(this.abort.signal);
  }
  disconnectedCallback() { this.abort.abort(); }
  start() {}
}
