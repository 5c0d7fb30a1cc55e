"""``bart node doctor``: check everything a volunteer can get wrong, and say how to fix it.

Each check returns a :class:`Check`: ``ok``, ``warn`` (works, but look at
it), ``fail`` (something is wrong) or ``skip`` (cannot be checked here, e.g.
no systemd in a chroot), with what was found and, when not ok, how to fix it
in plain words. ``--offline`` leaves out the checks that need the network
(DNS answers, uplink), so the doctor also runs in a chroot or on an image.

The checks read the real system; where they look (``/sys/class/net``, the
systemd runtime directory, the root of the installed files), the clock and
the time-outs are parameters of :class:`Doctor`, so tests point them at a
temporary tree instead of patching anything.

>>> Check("disk", "ok", "2.1 GB free").line()
'[ ok ] disk: 2.1 GB free'
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from .clock import TOLERANCE_MS, iso, newest_stamp
from .config import CONFIG_FILE, SECRETS_FILE, NodeSettings
from .dnsquery import DnsError, query_a
from .errors import NodeError
from .hotspot import HOSTAPD_CONF, HOTSPOT_UNITS

Status = Literal["ok", "warn", "fail", "skip"]

ENROLMENT_FILE: Final = "central/enrolment.json"
#: Largest enrolment file read (it holds a URL, keys and names: a few KB).
MAX_ENROLMENT_BYTES: Final = 256 * 1024
#: The clock of a Raspberry Pi without network starts where it stopped (or in
#: 1970): any date before this is certainly wrong.
EARLIEST: Final = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NODE_UNIT: Final = "bart-node.service"
CLOCK_FIX: Final = ("connect the node to the internet for a moment so it can set its clock, "
                    "or set it by hand: sudo date -s 'YYYY-MM-DD HH:MM' (reports are still "
                    "stored meanwhile, stamped with the node's own time: docs/deploy.md, "
                    "'The node's clock')")
_MARK: Final = {"ok": " ok ", "warn": "warn", "fail": "FAIL", "skip": "skip"}


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def line(self) -> str:
        """One line for a terminal (the fix, if any, on the next line)."""
        text = f"[{_MARK[self.status]}] {self.name}: {self.detail}"
        return f"{text}\n       fix: {self.fix}" if self.fix else text


@dataclass
class Report:
    """All checks of one run."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings and skipped checks are fine)."""
        return all(c.status != "fail" for c in self.checks)

    def text(self) -> str:
        """The report for a person."""
        lines = [c.line() for c in self.checks]
        failed = sum(c.status == "fail" for c in self.checks)
        warned = sum(c.status == "warn" for c in self.checks)
        lines.append("")
        if failed:
            lines.append(f"{failed} problem(s) found; fix them from the top down, then run "
                         "`bart node doctor` again.")
        elif any(c.name == "portal" and c.status == "skip" for c in self.checks):
            # Never "everything is fine" about a node that is not running.
            lines.append("Nothing failed, but the node is not running, so it was not checked "
                         "itself" + (f" ({warned} warning(s))." if warned else "."))
        else:
            lines.append("Everything checked is fine" + (f" ({warned} warning(s))."
                                                          if warned else "."))
        return "\n".join(lines)

    def as_json(self) -> str:
        """The report as JSON: ``{"ok": bool, "checks": [{name, status, detail, fix}]}``."""
        return json.dumps({"ok": self.ok, "checks": [asdict(c) for c in self.checks]},
                          ensure_ascii=False, indent=1)


def _run(cmd: list[str], timeout: float = 10.0) -> tuple[int, str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return done.returncode, (done.stdout or done.stderr).strip()


@dataclass
class Doctor:
    """Runs the checks for one node (``settings`` is None when no node exists yet)."""

    data_dir: Path
    settings: NodeSettings | None
    offline: bool = False
    #: Where network interfaces are listed.
    sys_class_net: Path = Path("/sys/class/net")
    #: Exists when systemd runs this machine.
    systemd_run: Path = Path("/run/systemd/system")
    #: Root under which the rendered hotspot files are looked for.
    root: Path = Path("/")
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    #: The clock cannot be right before this (e.g. when this code was installed).
    not_before: dt.datetime | None = None
    dns_port: int = 53
    timeout: float = 3.0
    settings_error: str = ""

    def run(self) -> Report:
        """Every check, in the order a volunteer should fix them."""
        report = Report()
        central_url: list[str | None] = [None]

        def enrolment() -> Check:
            check, central_url[0] = self.check_enrolment()
            return check

        steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
            ("node", self.check_node), ("clock", self.check_clock),
            ("disk", self.check_disk), ("keys", self.check_keys),
            ("hotspot interface", self.check_hotspot), ("services", self.check_services),
            ("ports", self.check_ports), ("hotspot DNS", self.check_dns),
            ("enrolment", enrolment), ("uplink", lambda: self.check_uplink(central_url[0])),
        ]
        for name, step in steps:
            try:
                result = step()
            except OSError as exc:  # e.g. not allowed to look: a check must not crash
                result = Check(name, "fail", f"cannot check: {exc}",
                               "run the doctor as root: sudo bart node doctor")
            report.checks += result if isinstance(result, list) else [result]
        return report

    # -- the node itself --------------------------------------------------------

    def check_node(self) -> Check:
        """The node was created (``node.toml``) and its settings are valid."""
        if self.settings is not None:
            s = self.settings
            return Check("node", "ok", f"{s.name} (area {s.area}) in {self.data_dir}")
        if not (self.data_dir / CONFIG_FILE).exists():
            return Check("node", "fail", f"no node in {self.data_dir}",
                         "create it: sudo bart node init --name NAME --area AREA "
                         "(on a Raspberry Pi the first boot does this from "
                         "bart-node.env on the SD card)")
        if "Permission denied" in self.settings_error:
            return Check("node", "fail", f"cannot read {self.data_dir / CONFIG_FILE}",
                         "run the doctor as root: sudo bart node doctor")
        return Check("node", "fail", f"{self.data_dir / CONFIG_FILE} is not valid: "
                     f"{self.settings_error}",
                     f"correct the setting named above in {self.data_dir / CONFIG_FILE} "
                     "(docs/configuration.md lists every setting)")

    def check_clock(self) -> Check:
        """The clock is plausible (a Pi has no battery clock; events carry the time):
        not before 2025 or the installation, and not behind the newest event this
        node stored itself or got from central (node/clock.py)."""
        now = self.clock()
        floor = max(EARLIEST, self.not_before or EARLIEST)
        if now < floor:
            return Check("clock", "fail", f"the clock says {now:%Y-%m-%d %H:%M} UTC, "
                         f"which is before {floor:%Y-%m-%d}", CLOCK_FIX)
        if self.settings is not None:
            newest = newest_stamp(self.settings.db_path,
                                  [self.settings.name, self._central_origin()])
            behind = newest - int(now.timestamp() * 1000)
            if behind > TOLERANCE_MS:
                return Check("clock", "fail", f"the clock says {now:%Y-%m-%d %H:%M} UTC, "
                             f"{behind // 60_000} minutes before the newest event this node "
                             f"stored ({iso(newest)})", CLOCK_FIX)
        return Check("clock", "ok", f"{now:%Y-%m-%d %H:%M} UTC")

    def _central_origin(self) -> str:
        """Central's origin from the enrolment, or "" when not enrolled (or unreadable)."""
        path = self.data_dir / ENROLMENT_FILE
        try:
            with path.open("rb") as fh:
                data = json.loads(fh.read(MAX_ENROLMENT_BYTES))
        except (OSError, ValueError):
            return ""
        return str(data.get("origin", "")) if isinstance(data, dict) else ""

    def check_disk(self) -> Check:
        """Enough free space for the store (the node refuses writes below the minimum)."""
        path = self.data_dir
        while not path.exists() and path != path.parent:
            path = path.parent
        usage = shutil.disk_usage(path)
        free_mb = usage.free // (1024 * 1024)
        need = self.settings.min_free_disk_mb if self.settings else 100
        detail = f"{free_mb} MB free on the disk of {path}"
        if free_mb < need:
            return Check("disk", "fail", f"{detail} (the node needs {need} MB)",
                         "free space: sudo journalctl --vacuum-size=50M, remove files you do "
                         "not need, or use a bigger SD card")
        if free_mb < 2 * need:
            return Check("disk", "warn", f"{detail}: little room left",
                         "free some space soon (sudo journalctl --vacuum-size=50M)")
        return Check("disk", "ok", detail)

    def check_keys(self) -> list[Check]:
        """Private keys and secrets exist and only their owner can read them."""
        if self.settings is None:
            return [Check("keys", "skip", "no node yet")]
        s = self.settings
        needed = [s.keys_dir / "signing.key", s.keys_dir / "encryption.key",
                  s.data_dir / SECRETS_FILE]
        optional = sorted(p for d in (s.tls_dir, s.data_dir / "central") if d.is_dir()
                          for p in d.glob("*.key"))
        missing = [p for p in needed if not p.exists()]
        if missing:
            return [Check("keys", "fail", "missing: " + ", ".join(str(p) for p in missing),
                          "this node has no identity: move its data directory aside and run "
                          "bart node init again (a node's keys are made on the node itself)")]
        loose = []
        for path in needed + optional:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                loose.append((path, mode))
        if loose:
            return [Check("keys", "fail", "others can read: " + ", ".join(
                f"{p} (mode {m:04o})" for p, m in loose),
                "make them private: sudo chmod 600 " + " ".join(str(p) for p, _ in loose))]
        return [Check("keys", "ok", f"{len(needed) + len(optional)} key files, mode 0600")]

    # -- hotspot ----------------------------------------------------------------

    def _hotspot_installed(self) -> bool:
        return (self.root / str(HOSTAPD_CONF).lstrip("/")).exists()

    def check_hotspot(self) -> list[Check]:
        """The Wi-Fi interface exists, is up and carries the hotspot address."""
        if self.settings is None:
            return [Check("hotspot interface", "skip", "no node yet")]
        if not self._hotspot_installed():
            return [Check("hotspot interface", "skip",
                          "no hotspot installed (add one: sudo ./install.sh --hotspot)")]
        hs = self.settings.hotspot
        iface = self.sys_class_net / hs.interface
        names = sorted(p.name for p in self.sys_class_net.iterdir()) \
            if self.sys_class_net.is_dir() else []
        if not iface.exists():
            wifi = [n for n in names if (self.sys_class_net / n / "wireless").exists()]
            hint = (f"this machine's Wi-Fi is called {', '.join(wifi)}: set hotspot.interface"
                    " to it in node.toml" if wifi else
                    "no Wi-Fi interface found: check that the Wi-Fi adapter is plugged in "
                    "(lsusb) and not switched off (sudo rfkill unblock wlan)")
            return [Check("hotspot interface", "fail",
                          f"{hs.interface} does not exist (interfaces: {', '.join(names)})",
                          hint)]
        checks = []
        state = _read(iface / "operstate")
        if state in ("down", "lowerlayerdown", "notpresent"):
            checks.append(Check("hotspot interface", "fail", f"{hs.interface} is {state}",
                                "start the access point: sudo systemctl restart "
                                "bart-hostapd (see: journalctl -u bart-hostapd)"))
        else:
            checks.append(Check("hotspot interface", "ok", f"{hs.interface} is {state or 'up'}"))
        code, out = _run(["ip", "-o", "-4", "addr", "show", "dev", hs.interface])
        if code == 0 and str(hs.address) not in out.split():
            checks.append(Check("hotspot address", "fail",
                                f"{hs.interface} does not carry {hs.address}",
                                "restart the access point, which sets it: sudo systemctl "
                                "restart bart-hostapd"))
        elif code == 0:
            checks.append(Check("hotspot address", "ok", f"{hs.address} on {hs.interface}"))
        return checks

    def check_services(self) -> list[Check]:
        """The systemd units of the node (and of the hotspot, when installed) are active."""
        if not self.systemd_run.is_dir():
            return [Check("services", "skip", "systemd is not running here (a chroot or "
                          "container): services are not checked")]
        units = [NODE_UNIT]
        if self._hotspot_installed():
            units += list(HOTSPOT_UNITS)
        checks = []
        for unit in units:
            state = _unit_state(unit)
            load, active, sub = state.get("LoadState", "unknown"), \
                state.get("ActiveState", "unknown"), state.get("SubState", "")
            if load == "not-found":
                checks.append(Check(unit, "fail", "not installed",
                                    "install it: sudo ./install.sh --hotspot (--node "
                                    "for a node without its hotspot)" if unit == NODE_UNIT
                                    else "install it: sudo ./install.sh --hotspot"))
            elif active == "active":
                checks.append(Check(unit, "ok", f"active ({sub})"))
            else:
                checks.append(Check(unit, "fail", f"{active} ({sub or load})",
                                    f"start it: sudo systemctl enable --now {unit}; if it "
                                    f"stops again, read why: journalctl -u {unit} -n 50"))
        if self._hotspot_installed():
            # The distributions' own units would fight ours over the Wi-Fi and port 53.
            for unit in ("hostapd.service", "dnsmasq.service"):
                if _unit_state(unit).get("ActiveState") == "active":
                    checks.append(Check(unit, "fail", "runs beside the node's own "
                                        f"bart-{unit}",
                                        f"switch it off: sudo systemctl disable --now {unit}"))
        return checks

    def check_ports(self) -> list[Check]:
        """The node's ports are served by the node, or free for it when it is stopped."""
        if self.settings is None:
            return [Check("ports", "skip", "no node yet")]
        s = self.settings
        health = self._health()
        checks = []
        ports = [("portal", s.http_port), ("Mosquitto", s.mqtt_port)]
        if s.point_port:
            ports.append(("point devices", s.point_port))
        for what, port in ports:
            busy = _listening(port, self.timeout)
            if health is not None:
                if busy or what == "point devices":
                    checks.append(Check(f"port {port}", "ok", f"{what}: served by the node"))
                else:
                    checks.append(Check(f"port {port}", "fail", f"{what}: nothing listens",
                                        "restart the node: sudo systemctl restart bart-node"))
            elif busy:
                checks.append(Check(f"port {port}", "fail",
                                    f"{what}: taken by another program while the node is not "
                                    "running",
                                    f"find it with: sudo ss -ltnp 'sport = :{port}', then stop "
                                    "and disable it (e.g. sudo systemctl disable --now "
                                    "apache2), or choose another port in node.toml"))
            else:
                checks.append(Check(f"port {port}", "ok", f"{what}: free for the node"))
        if health is None:
            if self.systemd_run.is_dir():
                checks.insert(0, Check("portal", "fail",
                                       f"the node does not answer on port {s.http_port}",
                                       "start it: sudo systemctl enable --now bart-node "
                                       "(read why it stopped: journalctl -u bart-node -n 50)"))
            elif self.offline:  # a chroot or an SD-card image: nothing runs there
                checks.insert(0, Check("portal", "skip", "the node is not running (no "
                                       f"answer on port {s.http_port}; --offline)"))
            else:
                checks.insert(0, Check("portal", "fail", "the node is not running (no answer "
                                       f"on port {s.http_port})",
                                       f"start it: bart node run --data-dir {self.data_dir} "
                                       "(installed with install.sh --node: sudo systemctl "
                                       "start bart-node)"))
        else:
            status = str(health.get("status", "?"))
            checks.insert(0, Check("portal", "ok" if status == "ok" else "warn",
                                   f"the node answers: status {status}",
                                   "" if status == "ok" else
                                   "see the details: bart status"))
            clock = health.get("clock")
            if isinstance(clock, dict) and clock.get("ok") is False:
                # The running node may know central's signed time: its verdict counts too.
                checks.insert(1, Check("node clock", "fail",
                                       str(clock.get("finding", ""))[:300], CLOCK_FIX))
        return checks

    def _health(self) -> dict[str, Any] | None:
        assert self.settings is not None
        s = self.settings
        wildcard = s.http_host in ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
        host = "127.0.0.1" if wildcard else s.http_host
        if ":" in host:
            host = f"[{host}]"
        try:
            with urllib.request.urlopen(f"http://{host}:{s.http_port}/healthz",
                                        timeout=self.timeout) as resp:
                data = json.loads(resp.read(65536))
        except urllib.error.HTTPError as exc:  # 503 still carries the health document
            try:
                data = json.loads(exc.read(65536))
            except ValueError:
                return None
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def check_dns(self) -> Check:
        """The hotspot's DNS answers any name with the node's address."""
        if self.offline:
            return Check("hotspot DNS", "skip", "--offline")
        if self.settings is None:
            return Check("hotspot DNS", "skip", "no node yet")
        if not self._hotspot_installed():
            return Check("hotspot DNS", "skip", "no hotspot installed")
        want = str(self.settings.hotspot.address.ip)
        name = f"bart-doctor-{secrets.token_hex(4)}.example.com"
        try:
            got = query_a(want, name, port=self.dns_port, timeout=self.timeout)
        except (DnsError, OSError) as exc:
            return Check("hotspot DNS", "fail", f"no answer from {want}: {exc}",
                         "restart the hotspot's DNS: sudo systemctl restart bart-dnsmasq "
                         "(see: journalctl -u bart-dnsmasq -n 50)")
        if got != [want]:
            return Check("hotspot DNS", "fail", f"{name} answers {got or 'nothing'}, "
                         f"not {want}",
                         "another DNS server answers on the hotspot: reinstall the hotspot "
                         "(sudo ./install.sh --hotspot) and restart bart-dnsmasq")
        return Check("hotspot DNS", "ok", f"any name answers {want}")

    # -- central ----------------------------------------------------------------

    def check_enrolment(self) -> tuple[Check, str | None]:
        """Enrolled with central (the node works without, but nothing reaches police
        or municipality); also returns central's URL."""
        path = self.data_dir / ENROLMENT_FILE
        if not path.exists():
            return Check("enrolment", "warn", "not enrolled: reports stay on this node",
                         "ask central for a one-time code, then: sudo bart node enroll "
                         "CENTRAL_URL --code CODE (docs/cli.md)"), None
        try:
            with path.open("rb") as fh:
                raw = fh.read(MAX_ENROLMENT_BYTES + 1)
            if len(raw) > MAX_ENROLMENT_BYTES:
                raise ValueError("file too large")
            data = json.loads(raw)
            url = data.get("url") if isinstance(data, dict) else None
            if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
                    or not urlsplit(url).hostname:
                raise ValueError("no central URL in it")
        except (OSError, ValueError) as exc:
            return Check("enrolment", "fail", f"{path} is unreadable: {exc}",
                         "enrol the node again (move the central/ folder aside first)"), None
        return Check("enrolment", "ok", f"enrolled with central at {url}"), url

    def check_uplink(self, url: str | None) -> Check:
        """Central answers over HTTP(S)."""
        if self.offline:
            return Check("uplink", "skip", "--offline")
        if url is None:
            return Check("uplink", "skip", "not enrolled")
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code  # central answered: the path is up
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return Check("uplink", "fail", f"central at {url} cannot be reached: {reason}",
                         "check the node's internet connection (cable or the centre's "
                         "Wi-Fi), then: ping -c 3 " + (urlsplit(url).hostname or "central")
                         + "; reports wait on the node until it is back")
        return Check("uplink", "ok", f"central answers (HTTP {status})")


def _unit_state(unit: str) -> dict[str, str]:
    """``LoadState``, ``ActiveState`` and ``SubState`` of a systemd unit."""
    code, out = _run(["systemctl", "show", "-p", "LoadState", "-p", "ActiveState",
                      "-p", "SubState", unit])
    if code != 0:
        return {"ActiveState": out[:200] or "unknown"}
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _listening(port: int, timeout: float) -> bool:
    """True when something accepts TCP connections on this machine's ``port``."""
    for host in ("127.0.0.1", "::1"):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def installed_at() -> dt.datetime:
    """When this code was installed: the clock cannot be right before it."""
    stamp = os.stat(__file__).st_mtime
    return dt.datetime.fromtimestamp(stamp, dt.UTC)


def diagnose(data_dir: Path, *, offline: bool = False) -> Report:
    """Load the node's settings (if any) and run every check."""
    settings: NodeSettings | None = None
    error = ""
    try:
        settings = NodeSettings.load(data_dir)
    except (NodeError, OSError) as exc:
        error = str(exc)
    doctor = Doctor(data_dir=data_dir, settings=settings, offline=offline,
                    not_before=installed_at(), settings_error=error)
    return doctor.run()

