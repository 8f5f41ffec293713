// Live: gossip and Raft under the hood, from the agent's event stream
// (GET /v1/agent/live). fetch() rather than EventSource, so the token travels
// in a header; a broken stream is opened again after half a second.
import { APIError, token } from "./api.js";
import { View, errorBox, esc } from "./util.js";

const FEED_MAX = 200;

export class LiveView extends View {
  start(signal) {
    this.innerHTML = `<h1>Live: under the hood</h1><p class="conn muted" role="status">Connecting…</p>
      <div class="live-grid">
      <section aria-labelledby="raft-h"><h2 id="raft-h">Raft</h2><div class="raft"></div></section>
      <section aria-labelledby="gossip-h"><h2 id="gossip-h">Gossip</h2><div class="gossip"></div></section>
      </div><section aria-labelledby="feed-h"><h2 id="feed-h">As it happens</h2>
      <ol class="feed" aria-live="off" tabindex="0" aria-label="Event feed"></ol></section>`;
    this.loop(signal);
  }

  async loop(signal) {
    const conn = this.querySelector(".conn");
    while (!signal.aborted) {
      try {
        const headers = token() ? { "X-Consul-Token": token() } : {};
        const res = await fetch("/v1/agent/live", { headers, signal });
        if (!res.ok) throw new APIError(res.status, (await res.text()).trim());
        conn.textContent = "Connected: updates stream in as they happen.";
        this.fresh = true;
        this.connected = true;
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
            if (data) this.show(JSON.parse(data));
          }
        }
        throw new Error("the stream ended");
      } catch (err) {
        if (signal.aborted) return;
        conn.innerHTML = err.status ? errorBox(err) : `Disconnected (${esc(err.message)}); reconnecting…`;
        if (this.connected) this.note("disconnected", "stream lost; reconnecting");
        this.connected = false;
        await new Promise(r => setTimeout(r, err.status === 403 ? 5000 : 500));
      }
    }
  }

  note(kind, text) {
    const feed = this.querySelector(".feed");
    const li = document.createElement("li");
    li.dataset.kind = kind;
    li.textContent = `${new Date().toLocaleTimeString()} ${kind}: ${text}`;
    feed.prepend(li);
    while (feed.children.length > FEED_MAX) feed.lastChild.remove();
  }

  show({ State: s, Events: events }) {
    for (const e of events) this.note(e.Kind, e.Text);
    // Across a reconnect the agent cannot tell what changed: compare here.
    if (this.fresh && s.Raft && this.lastTerm !== undefined && s.Raft.Term !== this.lastTerm) {
      this.note("election", `term ${this.lastTerm} -> ${s.Raft.Term} (while disconnected)`);
    }
    this.fresh = false;
    if (s.Raft) this.lastTerm = s.Raft.Term;
    const names = {};
    for (const m of s.Gossip?.Members || []) names[m.ID] = m.Name;
    const who = id => names[id] || id;
    const raft = this.querySelector(".raft");
    if (!s.Raft) {
      raft.innerHTML = `<p>${esc(s.Node)} is a client agent: it runs no Raft. Open this page on a server.</p>`;
    } else {
      const r = s.Raft;
      raft.innerHTML = `<dl class="raft-facts">
        <dt>This server</dt><dd>${esc(who(r.ID))} (<span data-raft="role">${esc(r.Role)}</span>)</dd>
        <dt>Term</dt><dd data-raft="term">${r.Term}</dd>
        <dt>Leader</dt><dd data-raft="leader">${esc(r.Leader ? who(r.Leader) : "none")}</dd>
        <dt>Commit / applied / last index</dt><dd>${r.CommitIndex} / ${r.AppliedIndex} / ${r.LastIndex}</dd></dl>
        <div class="table-wrap"><table><caption>Servers${r.Role === "leader" ? " (leader's view of match index)" : ""}</caption>
        <thead><tr><th scope="col">Server</th><th scope="col">Address</th><th scope="col">Voter</th><th scope="col">Match index</th></tr></thead>
        <tbody>${r.Servers.map(x => `<tr><td>${esc(who(x.ID))}</td><td>${esc(x.Address)}</td><td>${x.Voter ? "yes" : "no"}</td>
          <td>${x.ID === r.ID ? r.LastIndex + " (self)" : x.MatchIndex ?? "—"}</td></tr>`).join("")}</tbody></table></div>
        <h3>Last entries applied</h3><ol class="applied">${r.RecentApplied.slice().reverse()
          .map(e => `<li>#${e.Index} term ${e.Term} ${esc(e.Type)}</li>`).join("")}</ol>`;
    }
    const g = s.Gossip, gossip = this.querySelector(".gossip");
    if (!g) { gossip.innerHTML = "<p>No gossip pool.</p>"; return; }
    const c = g.Counters;
    gossip.innerHTML = `<p>Lifeguard awareness of ${esc(s.Node)}: <strong data-gossip="awareness">${g.Awareness}</strong>
      (0 is healthy; higher stretches its probe timing). Probes ${c.Probes}, failed ${c.ProbeFailures},
      indirect ${c.IndirectProbes}, suspicions ${c.Suspicions}, refutations ${c.Refutations}.</p>
      <div class="table-wrap"><table><caption class="visually-hidden">Gossip members</caption>
      <thead><tr><th scope="col">Member</th><th scope="col">Address</th><th scope="col">Role</th>
      <th scope="col">State</th><th scope="col">Incarnation</th></tr></thead>
      <tbody>${g.Members.map(m => `<tr data-member="${esc(m.Name)}"><td>${esc(m.Name)}</td><td>${esc(m.Addr)}</td>
        <td>${esc(m.Role)}</td><td class="${m.State === "alive" ? "passing" : m.State === "suspect" ? "warning" : "critical"}"
        data-state="${esc(m.State)}">${esc(m.State)}</td><td>${m.Incarnation}</td></tr>`).join("")}</tbody></table></div>`;
  }
}
