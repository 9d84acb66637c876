"""The audit's HTML report opened from its file in headless Chromium (Debian's, installed by `make test`), driven
over the DevTools protocol: every plot the report has data for is laid out with its bars or lines drawn, and the
page's verdict is the verdict.json beside it."""
import base64
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import connect

from config.audit import AuditConfig
from audit.report import figures
from valueloop.audit import run_audit
from audit.windows import load_window

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--window-size=1300,900"]
FACTS = """JSON.stringify({
  title: document.title,
  status: document.getElementById('status').textContent,
  verdict: JSON.parse(document.getElementById('verdict').textContent).status,
  tables: [...document.querySelectorAll('table')].map(t => [t.className, t.rows.length]),
  plots: [...document.querySelectorAll('figure.plot')].map(f => {
    const svg = f.querySelector('svg'), box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const drawn = svg ? [...svg.querySelectorAll('path, rect, line, use')].filter(e => {
      const b = e.getBBox(); return b.width > 0 || b.height > 0; }).length : 0;
    return {id: f.dataset.plot, width: box.width, height: box.height, drawn: drawn,
            caption: f.querySelector('figcaption').textContent};
  })})"""


class Browser:
    """Headless Chromium on a DevTools port on 127.0.0.1, with a fresh profile."""

    def __init__(self, profile: Path):
        self.process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for line in self.process.stderr:
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                self.port = int(found.group(1))
                break
        else:
            raise RuntimeError(f"{CHROMIUM} exited with {self.process.wait()} before opening its DevTools port")

    def open(self, url: str, screenshot: Path, facts: str = FACTS) -> dict:
        """Loads `url` in the first tab, waits for its load event, saves a screenshot, returns the page's `facts`
        (a script whose value is JSON)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as answer:
            page = next(t for t in json.load(answer) if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as socket:
            ids = iter(range(1, 1000))

            def call(method: str, **params):
                number = next(ids)
                socket.send(json.dumps({"id": number, "method": method, "params": params}))
                while True:
                    message = json.loads(socket.recv(timeout=30))
                    if message.get("id") == number:
                        if "error" in message:
                            raise RuntimeError(f"{method}: {message['error']}")
                        return message["result"]
                    if message.get("method") == "Page.loadEventFired":
                        loaded.append(True)

            loaded: list[bool] = []
            call("Page.enable")
            call("Page.navigate", url=url)
            while not loaded:
                message = json.loads(socket.recv(timeout=30))
                if message.get("method") == "Page.loadEventFired":
                    loaded.append(True)
            shot = call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            result = call("Runtime.evaluate", expression=facts, returnByValue=True)
            if "exceptionDetails" in result:
                raise RuntimeError(f"the page's facts: {result['exceptionDetails']}")
            return json.loads(result["result"]["value"])

    def close(self):
        self.process.kill()
        self.process.wait(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    opened = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield opened
    opened.close()


def test_the_report_renders_in_chromium_with_every_plot_drawn(browser, clickbait_days, tmp_path):
    examples, reference, current = clickbait_days
    out = tmp_path / "audit"
    verdict = run_audit(examples, reference, current, None, AuditConfig(), out)
    said = json.loads((out / "verdict.json").read_text())
    expected = [f["id"] for f in figures(load_window(examples, *reference), load_window(examples, *current), said,
                                         AuditConfig())]
    assert {"dwell.all", "mix.surface", "mix.device", "mix.item_category", "maturity.cart", "maturity.purchase",
            "maturity.curve"} <= set(expected)
    facts = browser.open((out / "report.html").as_uri(), tmp_path / "report.png")
    assert [p["id"] for p in facts["plots"]] == expected
    for plot in facts["plots"]:
        assert plot["width"] > 300 and plot["height"] > 150, plot
        assert plot["drawn"] >= 10, plot  # axes, ticks and the bars or lines themselves
    assert facts["verdict"] == said["status"] == verdict.status.value == "block"
    assert facts["status"].startswith("BLOCK") and "clickbait signature" in facts["title"] + json.dumps(said)
    tables = dict(facts["tables"])
    assert tables["checks"] == len(said["checks"]) + 1 and tables["slices"] > 5
    assert (tmp_path / "report.png").stat().st_size > 20_000
