// SVG drawings: a service's topology (downstreams -> service -> upstreams, each
// edge coloured by what intentions decide) and a compiled discovery chain.
import { esc } from "./util.js";

const BOX_W = 170, BOX_H = 34, GAP_Y = 14, COL_X = [10, 300, 590], WIDTH = 770;

function box(x, y, label, extra = "") {
  return `<g ${extra}><rect x="${x}" y="${y}" width="${BOX_W}" height="${BOX_H}" rx="6"
    fill="#f3f5f8" stroke="#4a5360"/><text x="${x + 10}" y="${y + 22}">${esc(label)}</text></g>`;
}

function columnY(i, n, height) {
  const total = n * BOX_H + (n - 1) * GAP_Y;
  return (height - total) / 2 + i * (BOX_H + GAP_Y);
}

// edges: [{from, to, allowed}] where one end is `service`.
export function topology(service, downstreams, upstreams, edges) {
  const rows = Math.max(1, downstreams.length, upstreams.length);
  const height = rows * (BOX_H + GAP_Y) + 20;
  const parts = [];
  const midY = columnY(0, 1, height);
  const pos = {};
  downstreams.forEach((name, i) => { pos["d:" + name] = [COL_X[0], columnY(i, downstreams.length, height)]; });
  upstreams.forEach((name, i) => { pos["u:" + name] = [COL_X[2], columnY(i, upstreams.length, height)]; });
  for (const e of edges) {
    const fromDown = e.to === service;
    const a = fromDown ? pos["d:" + e.from] : [COL_X[1], midY];
    const b = fromDown ? [COL_X[1], midY] : pos["u:" + e.to];
    if (!a || !b) continue;
    const action = e.allowed ? "allow" : "deny";
    parts.push(`<line class="edge-${action}" data-edge="${esc(e.from)}->${esc(e.to)}" data-action="${action}"
      x1="${a[0] + BOX_W}" y1="${a[1] + BOX_H / 2}" x2="${b[0]}" y2="${b[1] + BOX_H / 2}"
      stroke-width="3" marker-end="url(#arrow)"><title>${esc(e.from)} to ${esc(e.to)}: ${action}</title></line>`);
  }
  downstreams.forEach(n => parts.push(box(...pos["d:" + n], n)));
  upstreams.forEach(n => parts.push(box(...pos["u:" + n], n)));
  parts.push(box(COL_X[1], midY, service, 'font-weight="bold"'));
  const described = edges.map(e => `${e.from} to ${e.to}: ${e.allowed ? "allowed" : "denied"}`).join("; ");
  // Without upstreams the third column is left out, so phones draw it larger.
  const width = upstreams.length ? WIDTH : COL_X[1] + BOX_W + 10;
  return `<svg role="img" aria-label="Topology of ${esc(service)}. ${esc(described || "No upstreams or downstreams")}"
    viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7"
      orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#4a5360"/></marker></defs>
    <text x="${COL_X[0]}" y="14">downstreams</text>${upstreams.length ? `<text x="${COL_X[2]}" y="14">upstreams</text>` : ""}
    ${parts.join("\n")}</svg>`;
}

// The chain's graph: columns by distance from the start node; targets last.
export function chain(compiled) {
  const nodes = compiled.Nodes || {};
  const depth = { [compiled.StartNode]: 0 };
  const order = [compiled.StartNode];
  const edges = [];
  for (let i = 0; i < order.length; i++) {
    const id = order[i], node = nodes[id];
    if (!node) continue;
    const nexts = [
      ...(node.Routes || []).map(r => [r.NextNode, r.Definition?.Match?.HTTP?.PathPrefix || "route"]),
      ...(node.Splits || []).map(s => [s.NextNode, `${s.Weight}%`]),
    ];
    if (node.Resolver) nexts.push(["target:" + node.Resolver.Target, "target"]);
    for (const [next, label] of nexts) {
      edges.push([id, next, label]);
      if (!(next in depth)) { depth[next] = depth[id] + 1; order.push(next); }
    }
  }
  const cols = {};
  for (const id of order) (cols[depth[id]] ||= []).push(id);
  const ncols = Object.keys(cols).length, colW = 230;
  const rows = Math.max(...Object.values(cols).map(c => c.length));
  const height = rows * (BOX_H + GAP_Y) + 10, width = ncols * colW;
  const pos = {};
  for (const [d, ids] of Object.entries(cols)) {
    ids.forEach((id, i) => { pos[id] = [10 + Number(d) * colW, columnY(i, ids.length, height)]; });
  }
  const label = id => {
    if (id.startsWith("target:")) return "target " + id.slice(7).split(".")[0];
    const n = nodes[id];
    return n ? `${n.Type} ${n.Name.split(".")[0]}` : id;
  };
  const lines = edges.map(([a, b, text]) => {
    const [x1, y1] = pos[a], [x2, y2] = pos[b];
    return `<line x1="${x1 + BOX_W}" y1="${y1 + BOX_H / 2}" x2="${x2}" y2="${y2 + BOX_H / 2}" stroke="#4a5360"
      stroke-width="2"/><text x="${(x1 + BOX_W + x2) / 2 - 14}" y="${(y1 + y2) / 2 + BOX_H / 2 - 8}">${esc(text)}</text>`;
  });
  const boxes = order.map(id => box(...pos[id], label(id)));
  const described = order.map(label).join(", then ");
  return `<svg role="img" aria-label="Routing chain: ${esc(described)}" viewBox="0 0 ${width} ${height}"
    width="${width}" height="${height}">${lines.join("")}${boxes.join("")}</svg>`;
}
