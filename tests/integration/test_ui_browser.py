"""The web UI in headless Chromium against 1 server + 2 clients with ACLs (default deny).

The cluster is the walkthrough's mesh cluster (tests/walkthrough_cluster.py:
gossip key, TLS, auto_encrypt, ACLs) with `ui_config { enabled = true }` on the
server, whose UI the browser opens. `api` runs on client 1 and `web` (upstream
api) on client 2, each a `proconsul demo service` with an HTTP check every second.

What a learner would see, in order:
- log in with the management token; api and web are passing;
- api's demo switch fails its health: the list turns critical without a reload;
- a KV key created and deleted from the page;
- an allow intention made on the Intentions page colours web -> api allow on api's
  topology; a deny written meanwhile turns that edge deny without a reload;
- a read-only token is refused KV and intention writes, with the permission named;
- the Live page: the server's process killed and started again, a new term and
  leader show up on the same page.
Each page is screenshotted (under the test's tmp dir; `UI_SCREENSHOTS=dir` copies
them elsewhere) and checked with axe-core (no serious or critical violation).

Needs Debian's chromium at /usr/bin/chromium, Playwright for Python and
`npm ci` (axe-core); .ci/run installs all three.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.agent_process import free_port, proconsul_cmd, start_agent, wait_for
from tests.walkthrough_cluster import CLIENT_1, CLIENT_2, MGMT, SERVER, Mesh

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
BASE = 186  # 127.0.0.186-188
SEE_S = 15_000  # ms: how long the page may take to show a change
READ_ONLY_RULES = 'key_prefix "" { policy = "read" }\nservice_prefix "" { policy = "read" }\n'
READ_ONLY_RULES += 'node_prefix "" { policy = "read" }\n'

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")


class UICluster(Mesh):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, base=BASE)
        self.http_port = free_port()
        self.demos: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self.read_only: str | None = None

    def configure(self) -> None:
        super().configure()
        server = self.pool[SERVER]
        with (self.config_dir(server) / "agent.hcl").open("a") as f:
            f.write("ui_config {\n  enabled = true\n}\n")

    def start_server(self) -> None:
        # The server's API stays on one port, so a page outlives a restart.
        self.restart_server()

    def restart_server(self) -> None:
        member = self.pool[SERVER]
        if member.agent is not None and member.agent.proc.poll() is None:
            member.agent.stop()
        args = [*member.args, *self.pool.join_args(member)]
        member.agent = start_agent(self.pool.tmp_path, *args, dev=False, http_port=self.http_port)
        wait_for(lambda: member.running.get_json("/v1/status/leader"), 30.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/ui/"

    def call(self, method: str, path: str, body: Any = None, agent: str = SERVER) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        status, _, text = self.pool[agent].running.request(
            method, path, body=data, headers={"X-Consul-Token": MGMT}
        )
        assert status == 200, (method, path, status, text)
        return json.loads(text) if text else None

    def demo(self, name: str, agent: str, upstream: str | None = None) -> None:
        ip = self.ip(agent)
        port = free_port(ip)
        log = (self.tmp / f"demo-{name}.log").open("wb")
        proc = subprocess.Popen(
            proconsul_cmd("demo", "service", "-name", name, "-listen", f"{ip}:{port}"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://{ip}:{port}"
        self.demos[name] = (proc, url)
        proxy: dict[str, Any] = {}
        if upstream:
            bind = free_port()
            proxy = {"Upstreams": [{"DestinationName": upstream, "LocalBindPort": bind}]}
        self.call(
            "PUT",
            "/v1/agent/service/register",
            {
                "Name": name,
                "Address": ip,
                "Port": port,
                "Tags": [f"fake-service-{name}"],
                "Meta": {"owner": "ui-test"},
                "Check": {"HTTP": f"{url}/health", "Interval": "1s"},
                "Connect": {"SidecarService": {"Proxy": proxy}},
            },
            agent=agent,
        )

    def switch(self, name: str, action: str) -> None:
        import urllib.request

        _, url = self.demos[name]
        urllib.request.urlopen(urllib.request.Request(f"{url}/{action}", method="POST"), timeout=5)

    def read_only_token(self) -> str:
        if self.read_only is None:
            policy = {"Name": "ui-read-only", "Rules": READ_ONLY_RULES}
            self.call("PUT", "/v1/acl/policy", policy)
            made = self.call("PUT", "/v1/acl/token", {"Policies": [{"Name": "ui-read-only"}]})
            self.read_only = str(made["SecretID"])
        return self.read_only


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UICluster]:
    ui = UICluster(tmp_path_factory.mktemp("ui-cluster"))
    ui.configure()
    try:
        ui.start()
        ui.demo("api", CLIENT_1)
        ui.demo("web", CLIENT_2, upstream="api")
        yield ui
    finally:
        for proc, _ in ui.demos.values():
            proc.terminate()
            proc.wait(timeout=10)
        for name in (CLIENT_2, CLIENT_1, SERVER):
            if ui.pool[name].agent is not None:
                ui.pool.stop(ui.pool[name])


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("ui-screenshots")
    yield out
    copy_to = os.environ.get("UI_SCREENSHOTS")
    if copy_to:
        shutil.copytree(out, copy_to, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, cluster: UICluster) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], "uncaught errors in the page"


def expect(locator: Any) -> Any:
    return playwright_api.expect(locator)


def login(page: Any, cluster: UICluster, secret: str) -> None:
    page.goto(cluster.url + "#/login")
    page.get_by_label("Token").fill(secret)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/ui/#/services")


def check_page(page: Any, shots: Path, name: str) -> None:
    """Screenshot the page and run axe-core on it: no serious or critical violation."""
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    if not AXE.exists():
        pytest.fail(f"axe-core is not installed ({AXE}): run `npm ci`")
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
    )
    assert found == [], f"accessibility violations on {name}"


def test_1_login_shows_api_and_web_passing(page: Any, cluster: UICluster, shots: Path) -> None:
    page.goto(cluster.url + "#/login")
    check_page(page, shots, "login")
    login(page, cluster, MGMT)
    for name in ("api", "web"):
        row = page.locator(f'tr[data-service="{name}"]')
        expect(row.locator('[data-health="passing"]')).to_have_text("1 passing", timeout=SEE_S)
        expect(row).to_contain_text(f"fake-service-{name}")
    expect(page.locator('tr[data-service="web-sidecar-proxy"]')).to_contain_text("sidecar")
    check_page(page, shots, "services")


class OpenRequests:
    """The requests a page has open, to tell a view's long-lived connections."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.open: dict[Any, tuple[str, float]] = {}

    def __enter__(self) -> OpenRequests:
        self.page.on("request", self._start)
        self.page.on("requestfinished", self._end)
        self.page.on("requestfailed", self._end)
        return self

    def __exit__(self, *_: object) -> None:
        self.page.remove_listener("request", self._start)
        self.page.remove_listener("requestfinished", self._end)
        self.page.remove_listener("requestfailed", self._end)

    def _start(self, request: Any) -> None:
        self.open[request] = (request.url, time.monotonic())

    def _end(self, request: Any) -> None:
        self.open.pop(request, None)

    def long_lived(self, older_than_s: float = 1.0) -> list[str]:
        """Paths of the requests open longer than a plain read takes."""
        now = time.monotonic()
        return sorted(
            urllib.parse.urlsplit(url).path
            for url, started in self.open.values()
            if now - started > older_than_s
        )

    def hold_exactly(self, expected: list[str], timeout_s: float = 10.0) -> None:
        """Wait until the long-lived requests are `expected`, then see them stay so."""
        deadline = time.monotonic() + timeout_s
        while self.long_lived() != expected:
            assert time.monotonic() < deadline, f"open: {self.long_lived()}"
            self.page.wait_for_timeout(100)  # lets Playwright deliver request events
        for _ in range(10):  # and it stays so: no other read is held open
            self.page.wait_for_timeout(200)
            assert self.long_lived() == expected


def test_2_api_turns_critical_without_a_reload(page: Any, cluster: UICluster, shots: Path) -> None:
    api = page.locator('tr[data-service="api"]')
    expect(api.locator('[data-health="passing"]')).to_be_visible(timeout=SEE_S)
    page.evaluate("window.__same_page = true")
    cluster.switch("api", "fail")
    expect(api.locator('[data-health="critical"]')).to_have_text("1 critical", timeout=SEE_S)
    assert page.evaluate("window.__same_page") is True  # no reload happened
    with OpenRequests(page) as requests:
        page.get_by_role("link", name="api", exact=True).click()
        failing = page.locator('.instance tr:has([data-status="critical"]) pre')
        expect(failing).to_contain_text("500", timeout=SEE_S)
        expect(page.locator('line[data-edge="web->api"]')).to_have_count(1, timeout=SEE_S)
        # Health, intentions and the catalog, all over one connection.
        requests.hold_exactly(["/v1/agent/watch"])
    check_page(page, shots, "service-api")
    cluster.switch("api", "recover")
    # The service page follows too, still without a reload.
    expect(page.locator('.instance [data-status="passing"]')).to_have_count(1, timeout=SEE_S)
    assert page.evaluate("window.__same_page") is True


def test_3_kv_create_and_delete(page: Any, cluster: UICluster, shots: Path) -> None:
    page.get_by_role("link", name="Key/Value").click()
    page.get_by_label("Key").fill("ui-test/greeting")
    page.get_by_label("Value").fill("hello from the browser")
    page.get_by_role("button", name="Save").click()
    folder = page.get_by_role("link", name="ui-test/")
    expect(folder).to_be_visible(timeout=SEE_S)
    folder.click()
    row = page.locator('tr[data-key="ui-test/greeting"]')
    expect(row).to_contain_text("hello from the browser", timeout=SEE_S)
    assert cluster.call("GET", "/v1/kv/ui-test/greeting")[0]["Key"] == "ui-test/greeting"
    check_page(page, shots, "kv")
    page.get_by_role("button", name="Delete ui-test/greeting").click()
    expect(row).to_have_count(0, timeout=SEE_S)
    status, _, _ = cluster.pool[SERVER].running.request(
        "GET", "/v1/kv/ui-test/greeting", headers={"X-Consul-Token": MGMT}
    )
    assert status == 404


def test_4_a_deny_intention_turns_the_edge_deny(page: Any, cluster: UICluster, shots: Path) -> None:
    page.get_by_role("link", name="Intentions").click()
    page.get_by_label("Source").fill("web")
    page.get_by_label("Destination").fill("api")
    page.get_by_label("Action").select_option("allow")
    page.get_by_role("button", name="Save intention").click()
    row = page.locator('tr[data-intention="web->api"]')
    expect(row).to_contain_text("allow", timeout=SEE_S)
    expect(row).to_contain_text("9")  # exact -> exact precedence
    check_page(page, shots, "intentions")
    page.goto(cluster.url + "#/services/api")
    edge = page.locator('line[data-edge="web->api"]')
    expect(edge).to_have_attribute("data-action", "allow", timeout=SEE_S)
    # The learner writes a deny from a terminal: the open page follows.
    cluster.call(
        "PUT", "/v1/connect/intentions/exact?source=web&destination=api", {"Action": "deny"}
    )
    expect(edge).to_have_attribute("data-action", "deny", timeout=SEE_S)
    expect(page.locator(".routing svg")).to_be_visible()
    check_page(page, shots, "topology")


def test_5_other_pages_and_phone_width(
    browser: Any, page: Any, cluster: UICluster, shots: Path
) -> None:
    page.get_by_role("link", name="Nodes").click()
    expect(page.locator('tr[data-node="consul-client-1"]')).to_contain_text("alive", timeout=SEE_S)
    expect(page.locator('tr[data-node="consul-client-2"]')).to_contain_text("web")
    check_page(page, shots, "nodes")
    page.get_by_role("link", name="Access controls").click()
    reveal = page.get_by_role("button", name="Reveal the secret of").first
    expect(reveal).to_be_visible(timeout=SEE_S)
    assert MGMT not in page.content()  # secrets hidden until revealed
    check_page(page, shots, "acl")
    page.get_by_role("link", name="Config entries").click()
    page.get_by_role("link", name="proxy-defaults").click()
    expect(page.locator("summary", has_text="global")).to_be_visible(timeout=SEE_S)
    check_page(page, shots, "config")
    # Keyboard: skip link first, then the navigation.
    page.reload()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/#/services")
    # Phone width: nothing wider than the screen.
    phone = browser.new_context(viewport={"width": 390, "height": 844})
    small = phone.new_page()
    small.goto(cluster.url + "#/services")
    small.evaluate(f"localStorage.setItem('proconsul:token', '{MGMT}')")
    small.reload()
    expect(small.locator('tr[data-service="api"]')).to_be_visible(timeout=SEE_S)
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    small.screenshot(path=str(shots / "services-phone.png"), full_page=True)
    small.goto(cluster.url + "#/services/api")
    expect(small.locator('line[data-edge="web->api"]')).to_have_count(1, timeout=SEE_S)
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    small.screenshot(path=str(shots / "service-api-phone.png"), full_page=True)
    phone.close()


def test_6_read_only_token_is_refused_writes_with_the_permission_named(
    page: Any, cluster: UICluster
) -> None:
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    login(page, cluster, cluster.read_only_token())
    # No acl:read: the page says so and the ACL lists are never fetched.
    expect(page.get_by_role("link", name="Access controls")).to_be_hidden()
    page.goto(cluster.url + "#/acl")
    expect(page.get_by_role("alert")).to_contain_text("'acl:read'")
    assert not [url for url in asked if "/v1/acl/token" in url and "/self" not in url]
    page.get_by_role("link", name="Key/Value").click()
    page.get_by_label("Key").fill("ui-test/nope")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("lacks permission 'key:write'")
    page.get_by_role("link", name="Intentions").click()
    expect(page.get_by_role("alert")).to_have_count(0)
    page.get_by_label("Source").fill("web")
    page.get_by_label("Destination").fill("api")
    page.get_by_role("button", name="Save intention").click()
    expect(page.get_by_role("alert")).to_contain_text("intention:write")


def test_7_live_page_shows_a_new_term_after_the_leader_dies(
    page: Any, cluster: UICluster, shots: Path
) -> None:
    login(page, cluster, MGMT)
    page.get_by_role("link", name="Live").click()
    term = page.locator('[data-raft="term"]')
    expect(term).to_be_visible(timeout=SEE_S)
    expect(page.locator('[data-raft="leader"]')).to_have_text(SERVER)
    expect(page.locator('tr[data-member="consul-client-1"] [data-state]')).to_have_text("alive")
    # Lifeguard's awareness of every member, each as it published it in its tags.
    for member in (SERVER, CLIENT_1, CLIENT_2):
        score = page.locator(f'tr[data-member="{member}"] [data-awareness]')
        expect(score).to_have_attribute("data-awareness", re.compile(r"^[0-9]+$"))
    before = int(term.inner_text())
    check_page(page, shots, "live")
    cluster.pool[SERVER].running.signal(signal.SIGKILL)
    cluster.pool[SERVER].running.proc.wait(timeout=10)
    expect(page.locator(".conn")).to_contain_text("reconnecting", timeout=SEE_S)
    cluster.restart_server()
    expect(term).not_to_have_text(str(before), timeout=30_000)
    assert int(term.inner_text()) > before
    expect(page.locator('[data-raft="leader"]')).to_have_text(SERVER, timeout=SEE_S)
    expect(page.locator('.feed [data-kind="election"]').first).to_be_visible()
    page.screenshot(path=str(shots / "live-after-election.png"), full_page=True)


class EventStream:
    """A Server-Sent Events response read one `data:` message at a time."""

    def __init__(self, agent: Any, path: str, token: str) -> None:
        request = urllib.request.Request(agent.url + path, headers={"X-Consul-Token": token})
        self.response = urllib.request.urlopen(request, timeout=SEE_S / 1000)

    def next(self) -> Any:
        while True:
            line = self.response.readline()
            assert line, "the stream ended"
            if line.startswith(b"data: "):
                return json.loads(line[6:])

    def close(self) -> None:
        self.response.close()


def test_8_a_client_agents_watch_stream_speaks_only_of_what_the_token_reads(
    cluster: UICluster,
) -> None:
    rules = 'service "web" { policy = "read" }\nnode_prefix "" { policy = "read" }\n'
    rules += 'key_prefix "marker/" { policy = "read" }\n'
    cluster.call("PUT", "/v1/acl/policy", {"Name": "ui-web-only", "Rules": rules})
    made = cluster.call("PUT", "/v1/acl/token", {"Policies": [{"Name": "ui-web-only"}]})
    server = cluster.pool[SERVER].running

    def statuses() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for row in cluster.call("GET", "/v1/health/state/any"):
            out.setdefault(row["ServiceName"] or row["Node"], set()).add(row["Status"])
        return out

    # Settled (the sidecars, with no proxy running, stay critical throughout).
    wait_for(lambda: statuses()["api"] == statuses()["web"] == {"passing"}, 30.0)
    paths = ["/v1/health/state/any", "/v1/kv/marker/?recurse=true", "/v1/acl/tokens"]
    query = urllib.parse.urlencode([("path", p) for p in paths])
    # On a client agent: every read goes to the server with the caller's token.
    stream = EventStream(
        cluster.pool[CLIENT_1].running, f"/v1/agent/watch?{query}", made["SecretID"]
    )
    try:
        first = {event["Path"]: event for event in (stream.next() for _ in paths)}
        assert set(first) == set(paths)  # one event per path when the stream opens
        assert first["/v1/acl/tokens"]["Status"] == 403
        assert "acl:read" in first["/v1/acl/tokens"]["Error"]
        assert "Status" not in first["/v1/health/state/any"]
        # api's health is not this token's to read: its change sends nothing
        # (the marker key written after it is the next event).
        cluster.switch("api", "fail")
        wait_for(lambda: statuses()["api"] == {"critical"}, 30.0)
        cluster.call("PUT", "/v1/kv/marker/a", "after api failed")
        assert stream.next() == {"Path": "/v1/kv/marker/?recurse=true"}
        # web's health is: its change is sent.
        cluster.switch("web", "fail")
        assert stream.next() == {"Path": "/v1/health/state/any"}
    finally:
        stream.close()
        cluster.switch("api", "recover")
        cluster.switch("web", "recover")
        server.request("DELETE", "/v1/kv/marker/a", headers={"X-Consul-Token": MGMT})
    status, _, text = server.request(
        "GET", "/v1/agent/watch?path=/v1/agent/self", headers={"X-Consul-Token": MGMT}
    )
    assert (status, text) == (400, b"Cannot watch '/v1/agent/self'")


def test_9_a_client_agents_live_view_has_the_servers_raft_and_every_awareness(
    cluster: UICluster,
) -> None:
    client = cluster.pool[CLIENT_1].running
    server_view = cluster.call("GET", "/v1/agent/live?once")
    seen = cluster.call("GET", "/v1/agent/live?once", agent=CLIENT_1)
    assert seen["RaftRemote"] is True and seen["Raft"]["Term"] == server_view["Raft"]["Term"]
    assert seen["Raft"]["Leader"] == server_view["Raft"]["ID"]
    awareness = {m["Name"]: m["Awareness"] for m in seen["Gossip"]["Members"]}
    assert set(awareness) == {SERVER, CLIENT_1, CLIENT_2}
    assert all(isinstance(score, int) for score in awareness.values())
    # agent:read without operator:read: the client's own part, and why no Raft.
    rules = 'agent_prefix "" { policy = "read" }\n'
    cluster.call("PUT", "/v1/acl/policy", {"Name": "ui-agent-read", "Rules": rules})
    made = cluster.call("PUT", "/v1/acl/token", {"Policies": [{"Name": "ui-agent-read"}]})
    status, _, text = client.request(
        "GET", "/v1/agent/live?once", headers={"X-Consul-Token": made["SecretID"]}
    )
    assert status == 200
    body = json.loads(text)
    assert body["Raft"] is None and "operator:read" in body["RaftError"]
    assert body["Gossip"]["Members"]


def test_authorize_answers_for_the_callers_own_token(cluster: UICluster) -> None:
    server = cluster.pool[SERVER].running
    checks = [
        {"Resource": "acl", "Access": "read"},
        {"Resource": "key", "Segment": "anything", "Access": "read"},
        {"Resource": "key", "Segment": "anything", "Access": "write"},
    ]
    secret = cluster.read_only_token()
    status, _, text = server.request(
        "POST", "/v1/internal/acl/authorize", checks, headers={"X-Consul-Token": secret}
    )
    assert status == 200
    assert [row["Allow"] for row in json.loads(text)] == [False, True, False]
    answered = cluster.call("POST", "/v1/internal/acl/authorize", checks)
    assert [row["Allow"] for row in answered] == [True, True, True]
    bad = [{"Resource": "nonsense", "Access": "read"}]
    status, _, text = server.request(
        "POST", "/v1/internal/acl/authorize", bad, headers={"X-Consul-Token": MGMT}
    )
    assert (status, text) == (400, b"Invalid resource: 'nonsense'")


def test_ui_off_is_404_and_on_serves_the_page(tmp_path: Path) -> None:
    off = start_agent(tmp_path, "-hcl", "ui_config { enabled = false }")
    on = start_agent(tmp_path, "-hcl", "ui_config { enabled = true }")
    try:
        for path in ("/ui/", "/ui/app.js", "/"):
            assert off.request("GET", path)[0] == 404, path
        for path in ("/", "/ui"):  # redirected (urllib follows the Location) to the page
            status, _, page = on.request("GET", path)
            assert status == 200 and b"<pc-router>" in page, path
        status, headers, script = on.request("GET", "/ui/app.js")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        assert b"customElements.define" in script
        assert on.request("GET", "/ui/../../pyproject.toml")[0] == 404
    finally:
        off.stop()
        on.stop()
