// The shell: a hash router that puts one view element in <pc-router>; each
// view holds its own watches and ends them when it is replaced.
import { authorize } from "./api.js";
import { ACLView, ConfigView, IntentionsView, KVView, LoginView, NodesView } from "./views.js";
import { LiveView } from "./live.js";
import { ServiceView, ServicesView } from "./services.js";

const VIEWS = {
  "pc-services": ServicesView, "pc-service": ServiceView, "pc-nodes": NodesView, "pc-kv": KVView,
  "pc-intentions": IntentionsView, "pc-acl": ACLView, "pc-config": ConfigView, "pc-login": LoginView,
  "pc-live": LiveView,
};
for (const [tag, cls] of Object.entries(VIEWS)) customElements.define(tag, cls);

const TITLES = { services: "Services", nodes: "Nodes", kv: "Key/Value", intentions: "Intentions",
  acl: "Access controls", config: "Config entries", login: "Log in", live: "Live" };

class Router extends HTMLElement {
  connectedCallback() {
    window.addEventListener("hashchange", () => this.route(true));
    this.route(false);
  }

  route(focus) {
    const hash = location.hash.replace(/^#\/?/, "") || "services";
    const [page, ...rest] = hash.split("/");
    const arg = decodeURIComponent(rest.join("/"));
    let el;
    if (page === "services" && arg) { el = document.createElement("pc-service"); el.setAttribute("name", arg); }
    else if (page === "kv") { el = document.createElement("pc-kv"); el.setAttribute("prefix", arg); }
    else if (page === "config") { el = document.createElement("pc-config"); if (arg) el.setAttribute("kind", arg); }
    else el = document.createElement(VIEWS[`pc-${page}`] ? `pc-${page}` : "pc-services");
    this.replaceChildren(el);
    document.title = `${arg || TITLES[page] || "Services"} - Proconsul`;
    for (const a of document.querySelectorAll("header nav a")) {
      const target = a.getAttribute("href").replace(/^#\/?/, "").split("/")[0];
      if (target === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    if (focus) document.getElementById("main").focus();
    showAllowedLinks();
  }
}

// Hide the links to pages the token may not read at all (asked again on each navigation,
// so a new login shows at once).
async function showAllowedLinks() {
  const link = document.querySelector('header nav a[href="#/acl"]');
  try {
    const [acl] = await authorize([{ Resource: "acl", Access: "read" }]);
    link.parentElement.hidden = !acl;
  } catch { link.parentElement.hidden = false; }
}
customElements.define("pc-router", Router);
