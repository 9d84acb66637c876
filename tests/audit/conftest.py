"""What the audit's tests share: an HTTP server on 127.0.0.1 that receives alerts, and a pair of windows whose
second day a bait-loving serving policy made (the clickbait signature), written as the join's partitions."""
import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Receiver:
    """An HTTP server on a free loopback port that keeps every JSON body posted to it, by path; a path listed in
    `failing` answers 500 that many times before it takes a post."""

    def __init__(self):
        self.received: list[tuple[str, dict]] = []
        self.failing: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.failing.get(self.path, 0) > 0:
                    receiver.failing[self.path] -= 1
                    receiver.received.append((f"refused {self.path}", body))
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"down for maintenance")
                    return
                receiver.received.append((self.path, body))
                self.send_response(202 if self.path == "/v2/enqueue" else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[dict]:
        return [body for where, body in self.received if where == path]


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture(scope="session")
def clickbait_days(tmp_path_factory):
    """Partitions of two simulated days: the first served by the logging policy, the second by one that shows
    more bait. Returns the directory and the two days' event-time ranges."""
    from pipelines.label_files import label_events, write_examples
    from simulator import Simulation, SimulatorConfig
    from tests.audit.test_audit_scenarios import BASE, DAY_MS, LABELS, WORLD

    examples = tmp_path_factory.mktemp("clickbait_days")
    for day, changes in ((0, {}), (1, {"logging_policy": {"headline_weight": 6.0}})):
        config = SimulatorConfig.model_validate({**BASE, "seed": 1 + 2 * day, **changes})
        config = config.model_copy(update={"start": config.start + dt.timedelta(days=day)})
        events = [(e.name, e.datum) for e in Simulation(config, world=WORLD).events()]
        write_examples(label_events(events, LABELS, watermark_ms=config.end_ms + 10 * DAY_MS), examples,
                       {"day": day})
    start = SimulatorConfig.model_validate(BASE).start_ms
    return examples, (start, start + DAY_MS), (start + DAY_MS, start + 2 * DAY_MS)
