"""The alarm loop end to end, as its people meet it (issue: every alarm reaches a person).

`bart demo` runs a real central and three real nodes with their buttons (a wired
one on gpiozero's MockFactory pins, the others on point-device processes). A
panic button is held; the alarm must be on the police desk (`/staff/api/alarms`,
the list the desk page shows) within 5 s with the uplink up; the desk answers
"someone is coming" and the button's light must show it ("coming"), through
the node's uplink, its store and the point device's retained MQTT state. The
team's escalation of a report reaches the municipality's desk the same way,
and the desk's answer moves the resident's receipt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.central import staff_http_login
from tests.support.html import csrf_of
from tests.support.output import OutputReader

BART = str(Path(sys.executable).parent / "bart")
PASSWORD = "een-lange-zin-voor-de-meldkamer"
DESK_WITHIN_S = 5.0
NAMES = ("Buurthuis De Kleine Wereld", "Wijkcentrum De Zandloper", "Buurtcentrum De Propeller")


def _wait(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(step)


class Demo:
    """A running `bart demo`: its output, URLs, staff passwords and state file."""

    def __init__(self, tmp_path: Path) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.state_file = tmp_path / "demo-state.json"
        env = {**os.environ, "BART_DEMO_STATE": str(self.state_file)}
        self.proc = subprocess.Popen([BART, "demo", "--data-dir", str(tmp_path / "demo")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True, env=env)
        self.output = OutputReader(self.proc)

    @property
    def text(self) -> str:
        return self.output.text

    def ready(self, timeout: float = 90) -> str:
        return self.output.wait_for("Press Ctrl-C to stop.", timeout, "the demo did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def node_of(self, button: str) -> str:
        state = json.loads(self.state_file.read_text())
        return next(str(n["url"]) for n in state["nodes"] if button in n.get("buttons", []))


@pytest.fixture(scope="module")
def demo(mosquitto_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo for the module's tests (each start costs ~20 s of the CI run)."""
    tmp_path = tmp_path_factory.mktemp("alarm-loop")
    running = Demo(tmp_path)
    try:
        try:
            running.ready()
        except AssertionError:
            if "address already in use" not in running.text.lower():
                raise
            # bart demo picks free ports a moment before binding them: on a busy CI
            # machine another test's process can take one in between. Once more.
            running.stop()
            running = Demo(tmp_path / "again")
            running.ready()
        yield running
    finally:
        running.stop()
        sys.stdout.write(running.text[-3000:] if running.proc.returncode else "")


_CLIENTS: dict[tuple[str, str], httpx.Client] = {}


def staff_client(central: str, text: str, role: str) -> httpx.Client:
    """A desk member of ``role`` logged in with the demo's one-time password (and a new one);
    the same client for every test of one demo (its one-time password is spent)."""
    if (central, role) not in _CLIENTS:
        _CLIENTS[central, role] = _staff_login(central, text, role)
    return _CLIENTS[central, role]


def _staff_login(central: str, text: str, role: str) -> httpx.Client:
    name, otp = next((n, p) for n, r, p in re.findall(
        r"log in as '([^']+)' \((police|municipality|admin)\) with one-time password (\S+)",
        text) if r == role)
    return staff_http_login(central, name, otp, PASSWORD)


def alarms_of(client: httpx.Client) -> list[dict[str, Any]]:
    r = client.get("/staff/api/alarms")
    assert r.status_code == 200, r.text[:300]
    found: list[dict[str, Any]] = r.json()["alarms"]
    return found


def light_of(node: str, button: str) -> str | None:
    for b in httpx.get(f"{node}/demo/buttons", timeout=5).json()["buttons"]:
        if b["id"] == button:
            return str(b["light"])
    return None


def watching(node: str) -> int:
    """Open alarms the node's uplink polls quickly for (its /healthz)."""
    return int(httpx.get(f"{node}/healthz", timeout=5).json()["uplink"]["watching"])


def press(node: str, button: str) -> None:
    r = httpx.post(f"{node}/demo/press/{button}", timeout=15)
    assert r.status_code < 300, r.text


def answer(client: httpx.Client, alarm_id: str, action: str, seen: str) -> httpx.Response:
    page = client.get("/staff/reports")
    assert f'data-id="{alarm_id}"' in page.text, "the alarm is not on the desk's page"
    return client.post(f"/staff/alarms/{alarm_id}/answer",
                       data={"csrf": csrf_of(page.text), "action": action, "seen": seen})


@pytest.mark.timeout(240)
def test_a_panic_alarm_reaches_the_police_desk_and_its_answer_the_light(demo: Demo) -> None:
    text = demo.text
    central = re.search(r"Staff pages\s+(http://127\.0\.0\.1:\d+)/staff/login", text)
    assert central, text
    police = staff_client(central.group(1), text, "police")
    municipality = staff_client(central.group(1), text, "municipality")

    team: httpx.Client | None = None
    for button in ("klimboom-hek", "kompasplein-gevel"):  # a wired one, a point device's
        node = demo.node_of(button)
        pressed = time.time()
        press(node, button)
        found = _wait(lambda: [a for a in alarms_of(police)
                               if a["kind"] == "panic" and a["ts"] >= pressed * 1000 - 5000
                               and a["state"] == "new"], 15, f"{button}'s alarm at the desk")
        alarm = found[0]
        seen_at = time.time()
        latency = seen_at - alarm["ts"] / 1000
        print(f"{button}: on the police desk {latency * 1000:.0f} ms after the alarm was made")
        assert latency <= DESK_WITHIN_S, latency
        assert alarm["desk"] == "police" and alarm["place"], alarm
        # The municipality's desk does not see police alarms.
        assert all(a["id"] != alarm["id"] for a in alarms_of(municipality))
        # The desk page shows it first, with the answer buttons and the centre's name.
        page = police.get("/staff/reports").text
        assert page.index(f'data-id="{alarm["id"]}"') < page.index('data-testid="reports"')
        row = page[page.index(f'data-id="{alarm["id"]}"'):]
        centre = re.search(r'data-testid="alarm-node">([^<]+)<', row)
        assert centre and centre.group(1) in NAMES, row[:1500]
        assert light_of(node, button) == "stored"

        r = answer(police, alarm["id"], "on_my_way", "new")
        assert r.status_code == 303, r.text[:500]
        _wait(lambda: light_of(node, button) == "coming", 10,
              f"'coming' on {button}'s light")
        if team is None:  # the team page of the first button's node shows the answer
            team = team_client(node, text)
            row = team.get("/team").text.split(f'data-id="{alarm["id"]}"')[1].split("</li>")[0]
            assert 'data-desk="on_my_way"' in row and "Politie: komt eraan" in row, row
        print(f"{button}: desk answer on the light {(time.time() - seen_at) * 1000:.0f} ms "
              "after the desk saw the alarm (including the answer's page load)")
        # A second answer from a stale page is refused in words, and changes nothing.
        r = answer(police, alarm["id"], "seen", "new")
        assert r.status_code == 409 and "al beantwoord" in r.text, r.text[:500]
        # Resolved: the light says so, the node's fast polling ends.
        assert watching(node) == 1
        assert answer(police, alarm["id"], "resolved", "on_my_way").status_code == 303
        _wait(lambda: light_of(node, button) == "resolved", 10,
              f"'resolved' on {button}'s light")
        _wait(lambda: watching(node) == 0, 5, "the end of the quick polling")
        audit = staff_client(central.group(1), text, "admin") if button == "klimboom-hek" \
            else None
        if audit is not None:
            log = audit.get("/staff/audit").text
            assert alarm["id"] in log


def team_client(node: str, text: str) -> httpx.Client:
    """The demo's team member 'Demo' of ``node``, logged in (and a new password chosen),
    the same client for every test of one demo."""
    if (node, "team") not in _CLIENTS:
        _CLIENTS[node, "team"] = _team_login(node, text)
    return _CLIENTS[node, "team"]


def _team_login(node: str, text: str) -> httpx.Client:
    otp = re.search(re.escape(node) + r"/team\s+log in as 'Demo' with one-time password (\S+)",
                    text)
    assert otp, text
    client = httpx.Client(base_url=node, timeout=10, headers={"Origin": node})
    r = client.post("/team/login", data={"name": "Demo", "password": otp.group(1)})
    assert r.status_code == 303 and r.headers["location"] == "/team/password", r.text[:300]
    page = client.get("/team/password")
    r = client.post("/team/password", data={"csrf": csrf_of(page.text), "current": otp.group(1),
                                            "new": PASSWORD, "repeat": PASSWORD})
    assert r.status_code == 303, r.text[:300]
    return client


@pytest.mark.timeout(240)
def test_a_teams_escalation_reaches_the_desk_and_its_answer_the_resident(demo: Demo) -> None:
    """docs/team.md: "Escaleren → gemeente" reaches the municipality's desk at once; the
    desk's answer is the report's state, which the resident reads with the receipt code."""
    text = demo.text
    central = re.search(r"Staff pages\s+(http://127\.0\.0\.1:\d+)/staff/login", text)
    assert central, text
    municipality = staff_client(central.group(1), text, "municipality")
    node = demo.node_of("klimboom-hek")
    r = httpx.post(f"{node}/api/v1/reports", timeout=10, json={
        "category": "social", "text": "Mevrouw op nummer 12 doet al twee dagen niet open",
        "place": {"point": None, "text": "Hinkelbaan 12"}, "audience": "authorities"})
    assert r.status_code == 201, r.text
    report = r.json()
    team = team_client(node, text)
    page = team.get("/team").text
    assert f'data-id="{report["id"]}"' in page
    escalated = time.time()
    r = team.post("/team/ack", data={"csrf": csrf_of(page), "ref": report["id"],
                                     "action": "escalated", "to": "municipality",
                                     "note": "Sleutelhouder is de buurvrouw op 14"})
    assert r.status_code == 303, r.text[:500]
    found = _wait(lambda: [a for a in alarms_of(municipality) if a["id"] == report["id"]], 15,
                  "the escalation at the municipality's desk")
    latency = time.time() - escalated
    print(f"escalation on the municipality's desk {latency * 1000:.0f} ms after the team sent it")
    assert latency <= DESK_WITHIN_S
    alarm = found[0]
    assert alarm["kind"] == "escalation" and alarm["subject"] == "report", alarm
    assert alarm["note"] == "Sleutelhouder is de buurvrouw op 14" and alarm["place"] == \
        "Hinkelbaan 12"
    desk_page = municipality.get("/staff/reports").text
    assert desk_page.index(f'data-id="{report["id"]}"') < desk_page.index(
        'data-testid="reports"')

    r = answer(municipality, report["id"], "on_my_way", "new")
    assert r.status_code == 303, r.text[:500]

    def state() -> str:
        return str(httpx.get(f"{node}/api/v1/reports/{report['receipt']}", timeout=5)
                   .json()["state"])

    # Receipt lookups are limited to 60 a minute per device: poll gently.
    _wait(lambda: state() == "in_progress", 10, "'in progress' for the resident", step=0.5)
    # The desk answered: the node's quick polling for it ends.
    _wait(lambda: watching(node) == 0, 5, "the end of the quick polling")
    # ... and on the team's row of that report.
    row = team.get("/team").text.split(f'data-id="{report["id"]}"')[1].split("</li>")[0]
    assert 'data-testid="row-desk" data-desk="in_progress"' in row, row
    assert "Politie/gemeente: in behandeling" in row

    # A short public answer: on the resident's status page (with the receipt code).
    page = municipality.get(f"/staff/reports/{report['id']}").text
    r = municipality.post(f"/staff/reports/{report['id']}/reply", data={
        "csrf": csrf_of(page), "text": "Dank u. Het wijkteam gaat vandaag langs."})
    assert r.status_code == 303, r.text[:500]

    def shown() -> bool:
        html = httpx.get(f"{node}/status", params={"receipt": report["receipt"]}, timeout=5).text
        return 'data-testid="status-reply"' in html and "Het wijkteam gaat vandaag langs." in html

    _wait(shown, 40, "the desk's answer on the resident's status page", step=0.5)
    api = httpx.get(f"{node}/api/v1/reports/{report['receipt']}", timeout=5).json()
    assert api["reply"]["text"] == "Dank u. Het wijkteam gaat vandaag langs.", api
