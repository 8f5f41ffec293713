// Nodes, Key/Value, Intentions, Access controls, Config entries and Login.
import { authorize, get, request, setToken, token, watch } from "./api.js";
import { View, announce, badges, errorBox, esc, worst } from "./util.js";

export class NodesView extends View {
  start(signal) {
    this.innerHTML = `<h1>Nodes</h1><div class="body">Loading…</div>`;
    const body = this.querySelector(".body");
    watch("/v1/catalog/nodes", async nodes => {
      try {
        const [members, checks] = await Promise.all([
          get("/v1/agent/members", signal).catch(() => []),
          get("/v1/health/state/any", signal),
        ]);
        const services = await Promise.all(nodes.map(n =>
          get(`/v1/catalog/node-services/${encodeURIComponent(n.Node)}`, signal).catch(() => null)));
        const status = { 1: "alive", 2: "leaving", 3: "left", 4: "failed" };
        const rows = nodes.map((n, i) => {
          const m = members.find(x => x.Name === n.Node);
          const own = checks.filter(c => c.Node === n.Node);
          const health = worst(own.map(c => c.Status));
          const svc = (services[i]?.Services || []).map(s => s.Service);
          return `<tr data-node="${esc(n.Node)}"><td>${esc(n.Node)}</td><td>${esc(n.Address)}</td>
            <td>${m ? esc(status[m.Status] || m.Status) : "unknown"}</td>
            <td>${m ? (m.Tags.role === "consul" ? "server" : "client") : ""}</td>
            <td class="${health}">${own.length} checks, ${health}</td><td>${badges(svc)}</td></tr>`;
        });
        body.innerHTML = `<div class="table-wrap"><table><caption class="visually-hidden">Nodes</caption>
          <thead><tr><th scope="col">Node</th><th scope="col">Address</th><th scope="col">Gossip</th>
          <th scope="col">Role</th><th scope="col">Checks</th><th scope="col">Services</th></tr></thead>
          <tbody>${rows.join("")}</tbody></table></div>`;
      } catch (err) { body.innerHTML = errorBox(err); }
    }, err => { body.innerHTML = errorBox(err); }, signal);
  }
}

export class KVView extends View {
  start(signal) {
    const prefix = this.getAttribute("prefix") || "";
    this.innerHTML = `<h1>Key/Value <span class="muted">${esc(prefix || "/")}</span></h1>
      <form class="inline kv-form"><label>Key<input name="key" required value="${esc(prefix)}"></label>
      <label>Value<textarea name="value" rows="1"></textarea></label>
      <input type="hidden" name="cas" value="0"><button type="submit">Save</button></form>
      <div class="message" role="status"></div><div class="body">Loading…</div>`;
    const body = this.querySelector(".body"), form = this.querySelector("form");
    const message = this.querySelector(".message");
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const key = form.key.value, cas = form.cas.value;
      try {
        const res = await request("PUT", `/v1/kv/${encodeKey(key)}?cas=${cas}`, form.value.value);
        message.innerHTML = res.body === false
          ? errorBox({ message: `${key} changed meanwhile (check-and-set failed); reload it and try again` })
          : `Saved ${esc(key)}.`;
        form.cas.value = "0";
        announce(`Saved ${key}`);
      } catch (err) { message.innerHTML = errorBox(err); }
    });
    this.addEventListener("click", async ev => {
      const btn = ev.target.closest("button[data-action]");
      if (!btn) return;
      const key = btn.dataset.key, index = btn.dataset.index;
      try {
        if (btn.dataset.action === "edit") {
          const [row] = (await request("GET", `/v1/kv/${encodeKey(key)}`)).body;
          form.key.value = key;
          form.value.value = row.Value ? decodeB64(row.Value) : "";
          form.cas.value = String(row.ModifyIndex);
          form.value.focus();
        } else {
          const res = await request("DELETE", `/v1/kv/${encodeKey(key)}?cas=${index}`);
          message.innerHTML = res.body === false
            ? errorBox({ message: `${key} changed meanwhile; not deleted` }) : `Deleted ${esc(key)}.`;
          announce(`Deleted ${key}`);
        }
      } catch (err) { message.innerHTML = errorBox(err); }
    });
    watch(`/v1/kv/${encodeKey(prefix)}?recurse=true`, rows => {
      body.innerHTML = this.render(prefix, rows || []);
    }, err => {
      body.innerHTML = err.status === 404 ? this.render(prefix, []) : errorBox(err);
    }, signal);
  }

  render(prefix, rows) {
    // Show one level below the prefix: folders link deeper, keys can be edited.
    const seen = new Set(), out = [];
    for (const r of rows) {
      const rest = r.Key.slice(prefix.length), slash = rest.indexOf("/");
      if (slash >= 0 && slash < rest.length - 1) {
        const folder = prefix + rest.slice(0, slash + 1);
        if (seen.has(folder)) continue;
        seen.add(folder);
        out.push(`<tr><td><a href="#/kv/${esc(folder)}">${esc(folder)}</a></td><td>folder</td><td></td></tr>`);
      } else {
        out.push(`<tr data-key="${esc(r.Key)}"><td>${esc(r.Key)}</td><td>${esc(decodeB64(r.Value || ""))}</td>
          <td><button type="button" class="secondary" data-action="edit" data-key="${esc(r.Key)}"
            aria-label="Edit ${esc(r.Key)}">Edit</button>
          <button type="button" class="danger" data-action="delete" data-key="${esc(r.Key)}"
            data-index="${r.ModifyIndex}" aria-label="Delete ${esc(r.Key)}">Delete</button></td></tr>`);
      }
    }
    if (!out.length) return `<p>No keys under ${esc(prefix || "/")}.</p>`;
    return `<div class="table-wrap"><table><caption class="visually-hidden">Keys</caption>
      <thead><tr><th scope="col">Key</th><th scope="col">Value</th><th scope="col">Actions</th></tr></thead>
      <tbody>${out.join("")}</tbody></table></div>`;
  }
}

function encodeKey(key) { return key.split("/").map(encodeURIComponent).join("/"); }
function decodeB64(b64) {
  try { return new TextDecoder().decode(Uint8Array.from(atob(b64), c => c.charCodeAt(0))); }
  catch { return b64; }
}

export class IntentionsView extends View {
  start(signal) {
    this.innerHTML = `<h1>Intentions</h1>
      <form class="inline"><label>Source<input name="source" required></label>
      <label>Destination<input name="destination" required></label>
      <label>Action<select name="action"><option>allow</option><option>deny</option></select></label>
      <label>Description<input name="description"></label><button type="submit">Save intention</button></form>
      <div class="message" role="status"></div><div class="body">Loading…</div>`;
    const form = this.querySelector("form"), body = this.querySelector(".body");
    const message = this.querySelector(".message");
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      const q = `source=${encodeURIComponent(form.source.value)}&destination=${encodeURIComponent(form.destination.value)}`;
      try {
        await request("PUT", `/v1/connect/intentions/exact?${q}`,
          { Action: form.action.value, Description: form.description.value });
        message.textContent = `Saved ${form.source.value} → ${form.destination.value}.`;
        announce(message.textContent);
      } catch (err) { message.innerHTML = errorBox(err); }
    });
    this.addEventListener("click", async ev => {
      const btn = ev.target.closest("button[data-action]");
      if (!btn) return;
      const { source, destination, action } = btn.dataset;
      if (btn.dataset.action === "edit") {
        form.source.value = source; form.destination.value = destination;
        form.action.value = btn.dataset.intent; form.action.focus();
        return;
      }
      const q = `source=${encodeURIComponent(source)}&destination=${encodeURIComponent(destination)}`;
      try {
        await request("DELETE", `/v1/connect/intentions/exact?${q}`);
        message.textContent = `Deleted ${source} → ${destination}.`;
      } catch (err) { message.innerHTML = errorBox(err); }
      void action;
    });
    watch("/v1/connect/intentions", rows => {
      const sorted = [...(rows || [])].sort((a, b) => b.Precedence - a.Precedence);
      body.innerHTML = sorted.length ? `<div class="table-wrap"><table><caption class="visually-hidden">Intentions by precedence</caption>
        <thead><tr><th scope="col">Source</th><th scope="col">Destination</th><th scope="col">Action</th>
        <th scope="col">Precedence</th><th scope="col">Description</th><th scope="col">Actions</th></tr></thead><tbody>
        ${sorted.map(i => `<tr data-intention="${esc(i.SourceName)}->${esc(i.DestinationName)}">
          <td>${esc(i.SourceName)}</td><td>${esc(i.DestinationName)}</td>
          <td class="${i.Action === "deny" ? "critical" : "passing"}">${esc(i.Action || "L7")}</td>
          <td>${i.Precedence}</td><td>${esc(i.Description)}</td>
          <td><button type="button" class="secondary" data-action="edit" data-intent="${esc(i.Action)}"
            data-source="${esc(i.SourceName)}" data-destination="${esc(i.DestinationName)}"
            aria-label="Edit ${esc(i.SourceName)} to ${esc(i.DestinationName)}">Edit</button>
          <button type="button" class="danger" data-action="delete" data-source="${esc(i.SourceName)}"
            data-destination="${esc(i.DestinationName)}"
            aria-label="Delete ${esc(i.SourceName)} to ${esc(i.DestinationName)}">Delete</button></td></tr>`).join("")}
        </tbody></table></div>` : "<p>No intentions.</p>";
    }, err => { body.innerHTML = errorBox(err); }, signal);
  }
}

export class ACLView extends View {
  async start(signal) {
    this.innerHTML = "<h1>Access controls</h1>";
    let mayRead = false;
    try { [mayRead] = await authorize([{ Resource: "acl", Access: "read" }]); }
    catch (err) { this.innerHTML += errorBox(err); return; }
    if (!mayRead) {
      this.innerHTML += `<p class="error" role="alert">This token may not read tokens, policies or roles:
        that needs the permission 'acl:read'.</p>`;
      return;
    }
    if (signal.aborted) return;
    this.innerHTML = `<h1>Access controls</h1>
      <section aria-labelledby="tok-h"><h2 id="tok-h">Tokens</h2><div class="tokens">Loading…</div></section>
      <section aria-labelledby="pol-h"><h2 id="pol-h">Policies</h2><div class="policies">Loading…</div></section>
      <section aria-labelledby="rol-h"><h2 id="rol-h">Roles</h2><div class="roles">Loading…</div></section>`;
    const part = (path, sel, render) => watch(path, rows => {
      this.querySelector(sel).innerHTML = render(rows || []);
    }, err => { this.querySelector(sel).innerHTML = errorBox(err); }, signal);
    part("/v1/acl/tokens", ".tokens", rows => table(["Accessor ID", "Description", "Policies", "Secret"],
      rows.map(t => [esc(t.AccessorID), esc(t.Description), badges((t.Policies || []).map(p => p.Name)),
        `<button type="button" class="secondary" data-reveal="${esc(t.AccessorID)}"
          aria-label="Reveal the secret of ${esc(t.AccessorID)}">Reveal</button><code class="secret"></code>`])));
    part("/v1/acl/policies", ".policies", rows => table(["Name", "Description", "ID"],
      rows.map(p => [esc(p.Name), esc(p.Description), esc(p.ID)])));
    part("/v1/acl/roles", ".roles", rows => table(["Name", "Description", "Policies"],
      rows.map(r => [esc(r.Name), esc(r.Description), badges((r.Policies || []).map(p => p.Name))])));
    this.addEventListener("click", async ev => {
      const btn = ev.target.closest("button[data-reveal]");
      if (!btn) return;
      const out = btn.nextElementSibling;
      if (out.textContent) { out.textContent = ""; btn.textContent = "Reveal"; return; }
      try {
        const t = (await request("GET", `/v1/acl/token/${btn.dataset.reveal}`)).body;
        out.textContent = " " + t.SecretID; btn.textContent = "Hide";
      } catch (err) { out.innerHTML = errorBox(err); }
    });
  }
}

function table(heads, rows) {
  if (!rows.length) return "<p>None.</p>";
  return `<div class="table-wrap"><table><thead><tr>${heads.map(h => `<th scope="col">${h}</th>`).join("")}</tr></thead>
    <tbody>${rows.map(r => `<tr>${r.map(c => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table></div>`;
}

const KINDS = ["service-defaults", "proxy-defaults", "service-router", "service-splitter",
  "service-resolver", "service-intentions"];

export class ConfigView extends View {
  start(signal) {
    const kind = this.getAttribute("kind") || KINDS[0];
    this.innerHTML = `<h1>Config entries</h1><nav aria-label="Kinds"><ul class="row" style="list-style:none;padding:0">
      ${KINDS.map(k => `<li><a href="#/config/${k}" ${k === kind ? 'aria-current="page"' : ""}>${k}</a></li>`).join("")}
      </ul></nav><h2>${esc(kind)}</h2><div class="body">Loading…</div>`;
    const body = this.querySelector(".body");
    watch(`/v1/config/${kind}`, rows => {
      body.innerHTML = (rows || []).length ? (rows || []).map(e => `<details><summary>${esc(e.Name)}</summary>
        <pre>${esc(JSON.stringify(e, null, 2))}</pre></details>`).join("") : "<p>None of this kind.</p>";
    }, err => { body.innerHTML = errorBox(err); }, signal);
  }
}

export class LoginView extends View {
  start() {
    this.innerHTML = `<h1>Log in</h1><p>The token is kept in this browser's local storage and sent with every request.</p>
      <form class="inline"><label>Token<input name="token" type="password" autocomplete="off"></label>
      <button type="submit">Log in</button><button type="button" class="secondary" data-logout>Log out</button></form>
      <div class="message" role="status"></div>`;
    const form = this.querySelector("form"), message = this.querySelector(".message");
    message.textContent = token() ? "A token is set." : "No token is set.";
    form.addEventListener("submit", async ev => {
      ev.preventDefault();
      setToken(form.token.value.trim());
      try {
        const self = (await request("GET", "/v1/acl/token/self")).body;
        message.textContent = `Logged in as ${self.Description || self.AccessorID}.`;
        location.hash = "#/services";
      } catch (err) { message.innerHTML = errorBox(err); }
    });
    this.querySelector("[data-logout]").addEventListener("click", () => {
      setToken(""); message.textContent = "Logged out.";
    });
  }
}
