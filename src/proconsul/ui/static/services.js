// Services: the list (health counts, tags, kind) and a service's page
// (instances and check outputs, tags and meta, topology, routing).
import { get, watch } from "./api.js";
import { chain, topology } from "./draw.js";
import { View, badges, errorBox, esc, worst } from "./util.js";

const SIDECAR = "-sidecar-proxy";

export class ServicesView extends View {
  start(signal) {
    this.innerHTML = `<h1>Services</h1><div class="body" aria-live="polite">Loading…</div>`;
    const body = this.querySelector(".body");
    // One blocking query over every check; the names and tags are read again
    // only when it reports a change.
    watch("/v1/health/state/any", async checks => {
      try {
        const services = await get("/v1/catalog/services", signal);
        body.innerHTML = this.render(services, checks);
      } catch (err) { body.innerHTML = errorBox(err); }
    }, err => { body.innerHTML = errorBox(err); }, signal);
  }

  render(services, checks) {
    const byInstance = {};
    for (const c of checks) {
      if (!c.ServiceName) continue;
      const key = `${c.Node}/${c.ServiceID}`;
      (byInstance[key] ||= { name: c.ServiceName, statuses: [] }).statuses.push(c.Status);
    }
    const counts = {};
    for (const inst of Object.values(byInstance)) {
      const c = (counts[inst.name] ||= { passing: 0, warning: 0, critical: 0 });
      c[worst(inst.statuses)] += 1;
    }
    const rows = Object.keys(services).sort().map(name => {
      const c = counts[name] || { passing: 0, warning: 0, critical: 0 };
      const health = ["passing", "warning", "critical"].filter(s => c[s])
        .map(s => `<span class="${s}" data-health="${s}">${c[s]} ${s}</span>`).join(", ") || "no checks";
      const kind = name.endsWith(SIDECAR) ? "sidecar" : "service";
      return `<tr data-service="${esc(name)}"><td><a href="#/services/${encodeURIComponent(name)}">${esc(name)}</a></td>
        <td>${kind}</td><td>${health}</td><td>${badges(services[name])}</td></tr>`;
    });
    return `<div class="table-wrap"><table><caption class="visually-hidden">Services</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Health</th>
      <th scope="col">Tags</th></tr></thead><tbody>${rows.join("")}</tbody></table></div>`;
  }
}

// Proxies of the catalog: [{service, upstreams}] (read when something changed).
async function meshEdges(signal) {
  const names = Object.keys(await get("/v1/catalog/services", signal)).filter(n => n !== "consul");
  const rows = await Promise.all(names.map(n =>
    get(`/v1/catalog/service/${encodeURIComponent(n)}`, signal).catch(() => [])));
  const out = [];
  for (const list of rows) {
    for (const r of list) {
      if (r.ServiceKind !== "connect-proxy" || !r.ServiceProxy) continue;
      const from = r.ServiceProxy.DestinationServiceName;
      for (const up of r.ServiceProxy.Upstreams || []) {
        if (up.DestinationType && up.DestinationType !== "service") continue;
        out.push({ from, to: up.DestinationName });
      }
    }
  }
  return out;
}

export class ServiceView extends View {
  start(signal) {
    const name = this.getAttribute("name");
    this.innerHTML = `<h1>Service ${esc(name)}</h1>
      <section aria-labelledby="inst-h"><h2 id="inst-h">Instances</h2><div class="instances">Loading…</div></section>
      <section aria-labelledby="topo-h"><h2 id="topo-h">Topology</h2><div class="topology">Loading…</div></section>
      <section aria-labelledby="route-h"><h2 id="route-h">Routing</h2><div class="routing">Loading…</div></section>`;
    const instances = this.querySelector(".instances");
    watch(`/v1/health/service/${encodeURIComponent(name)}`, rows => {
      instances.innerHTML = this.renderInstances(rows);
    }, err => { instances.innerHTML = errorBox(err); }, signal);
    // Edges change with registrations and intentions: redraw on either.
    const redraw = () => this.drawTopology(name, signal);
    watch("/v1/config/service-intentions", redraw, redraw, signal);
    watch("/v1/catalog/services", redraw, () => {}, signal);
  }

  renderInstances(rows) {
    if (!rows.length) return `<p>No instances.</p>`;
    return rows.map(r => {
      const s = r.Service;
      const checks = r.Checks.map(c => `<tr data-check="${esc(c.CheckID)}"><td>${esc(c.Name)}</td>
        <td class="${esc(c.Status)}" data-status="${esc(c.Status)}">${esc(c.Status)}</td>
        <td><pre>${esc(c.Output)}</pre></td></tr>`).join("");
      const meta = Object.entries(s.Meta || {}).map(([k, v]) => `${k}=${v}`);
      return `<article class="instance" data-instance="${esc(s.ID)}"><h3>${esc(s.ID)} on ${esc(r.Node.Node)}
        <span class="muted">${esc(s.Address || r.Node.Address)}:${s.Port}</span></h3>
        <p>Tags: ${badges(s.Tags) || "none"} Meta: ${badges(meta) || "none"}</p>
        <div class="table-wrap"><table><caption class="visually-hidden">Checks of ${esc(s.ID)}</caption>
        <thead><tr><th scope="col">Check</th><th scope="col">Status</th><th scope="col">Output</th></tr></thead>
        <tbody>${checks}</tbody></table></div></article>`;
    }).join("");
  }

  async drawTopology(name, signal) {
    const topo = this.querySelector(".topology"), routing = this.querySelector(".routing");
    try {
      const edges = (await meshEdges(signal)).filter(e => e.from === name || e.to === name);
      const checked = await Promise.all(edges.map(async e => {
        const q = `source=${encodeURIComponent(e.from)}&destination=${encodeURIComponent(e.to)}`;
        const res = await get(`/v1/connect/intentions/check?${q}`, signal);
        return { ...e, allowed: !!res.Allowed };
      }));
      const downs = [...new Set(checked.filter(e => e.to === name).map(e => e.from))];
      const ups = [...new Set(checked.filter(e => e.from === name).map(e => e.to))];
      topo.innerHTML = topology(name, downs, ups, checked);
    } catch (err) { if (!signal.aborted) topo.innerHTML = errorBox(err); }
    try {
      const res = await get(`/v1/discovery-chain/${encodeURIComponent(name)}`, signal);
      routing.innerHTML = chain(res.Chain);
    } catch (err) { if (!signal.aborted) routing.innerHTML = errorBox(err); }
  }
}
