"""install.sh on a fresh Debian bookworm: a minimal root made by debootstrap,
a clean copy of this checkout in /opt/bart, then inside it by chroot: a plain
`install.sh` (packages, .venv and `bart` only: no user, no unit, no data
directory), `install.sh --hotspot` (it detects the chroot and starts no
service), the installed layout, the first-boot path, `bart --version`, `bart
node doctor --offline`, second runs that change nothing, `install.sh
--uninstall`, `install.sh --node`, and a plain run on a Raspberry Pi.

Slow tier. The debootstrap root (as a tarball), the downloaded .deb files and
pip's cache are kept in $BART_TEST_CACHE (default /var/cache/bart-tests), so
only the first run downloads Debian packages (pip keeps only what its registry
lets it cache). Needs root (chroot, mounts), like CI. Measured on 2 cores:
about 90 s the first time (debootstrap 41 s), 45-65 s after that.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.base import require, require_binary

# One chroot at a time (they share caches and a lock): one xdist worker takes them all,
# so that the other does not wait on the lock.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800), pytest.mark.xdist_group("chroot")]

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("BART_TEST_CACHE", "/var/cache/bart-tests"))
SUITE = "bookworm"
# What a Raspberry Pi OS Lite image has and a minbase root lacks.
BASE_PACKAGES = ["systemd", "systemd-sysv", "ca-certificates", "iproute2"]
BASE_VERSION = 1  # bump when BASE_PACKAGES change: the cached root is made again
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
       **{k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")}}


def mirror() -> str:
    """$BART_DEBIAN_MIRROR, else the host's own Debian mirror, else deb.debian.org."""
    if env := os.environ.get("BART_DEBIAN_MIRROR"):
        return env
    for src in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        try:
            text = src.read_text()
        except OSError:
            continue
        for url in re.findall(r"(?:URIs:|deb)\s+(https?://\S+)", text):
            if "security" not in url and url.rstrip("/").endswith("/debian"):
                return url
    return "http://deb.debian.org/debian"


def log(msg: str) -> None:
    print(f"[chroot test {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def base_tarball() -> Path:
    """The cached debootstrap root, made once (under a lock: tests may run in parallel)."""
    debootstrap = require_binary("debootstrap", "/usr/sbin/debootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"{SUITE}-minbase-v{BASE_VERSION}.tar"
    with open(CACHE / "base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        work = CACHE / f"build-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        debs = CACHE / "debootstrap-debs"
        debs.mkdir(exist_ok=True)
        started = time.monotonic()
        log(f"debootstrap {SUITE} from {mirror()} (first run: downloads)")
        try:
            subprocess.run(
                [debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                 f"--cache-dir={debs}", SUITE, str(work), mirror()],
                check=True, capture_output=True, text=True, timeout=1200)
        except subprocess.CalledProcessError as exc:
            shutil.rmtree(work, ignore_errors=True)
            raise AssertionError(f"debootstrap failed:\n{exc.stdout[-3000:]}\n"
                                 f"{exc.stderr[-3000:]}") from exc
        (work / "var/cache/apt/archives").mkdir(parents=True, exist_ok=True)
        for leftover in (work / "var/cache/apt/archives").glob("*.deb"):
            leftover.unlink()
        tmp = tarball.with_suffix(".tmp")
        subprocess.run(["tar", "-C", str(work), "--numeric-owner", "-cf", str(tmp), "."],
                       check=True)
        tmp.rename(tarball)
        shutil.rmtree(work, ignore_errors=True)
        log(f"base root cached in {tarball} ({time.monotonic() - started:.0f} s)")
        return tarball


def copy_checkout(dest: Path) -> None:
    """The working tree's files as they are (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if not src.is_file():  # deleted in the working tree
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


class Chroot:
    """A root directory with /proc, /dev and caches mounted; everything unmounted on close."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounts: list[Path] = []

    def mount(self, args: list[str], target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *args, str(target)], check=True, capture_output=True)
        self.mounts.append(target)

    def bind(self, source: Path, inside: str) -> None:
        source.mkdir(parents=True, exist_ok=True)
        self.mount(["--bind", str(source)], self.root / inside.lstrip("/"))

    def run(self, *cmd: str, timeout: float = 900,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["chroot", str(self.root), *cmd], env=ENV, text=True,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{shlex.join(cmd)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
        return result

    def leftover_processes(self) -> list[int]:
        """Processes whose root is this chroot (a daemon a package started)."""
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if os.readlink(proc / "root") == str(self.root):
                        found.append(int(proc.name))
                except OSError:
                    continue
        return found

    def close(self) -> None:
        for target in reversed(self.mounts):
            if subprocess.run(["umount", str(target)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(target)], capture_output=True)
        self.mounts.clear()


@pytest.fixture
def chroot(tmp_path: Path) -> Iterator[Chroot]:
    require(os.geteuid() == 0, "needs root (chroot and mounts), as in CI")
    require_binary("chroot", "/usr/sbin/chroot")
    tarball = base_tarball()
    # One chroot run at a time on this machine: they share the .deb and pip caches
    # (and apt's lock in the .deb cache).
    lock = open(CACHE / "run.lock", "w")  # noqa: SIM115 - held until the fixture ends
    fcntl.flock(lock, fcntl.LOCK_EX)
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(tarball)], check=True)
    # apt and pip reach their registries as they do from this machine: its resolver,
    # the certificate authorities it added, its pip settings and proxies.
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    local_ca = Path("/usr/local/share/ca-certificates")
    if local_ca.is_dir():
        shutil.copytree(local_ca, root / "usr/local/share/ca-certificates", dirs_exist_ok=True)
    if Path("/etc/pip.conf").is_file():
        shutil.copy("/etc/pip.conf", root / "etc/pip.conf")
    box = Chroot(root)
    try:
        # debootstrap made the device nodes; the host's /dev is not mounted in (a
        # mount below a shared /dev could show up on the host's own /dev).
        box.mount(["-t", "proc", "proc"], root / "proc")
        box.mount(["-t", "devpts", "-o", "newinstance,ptmxmode=0666", "devpts"],
                  root / "dev/pts")
        box.bind(CACHE / "apt-archives", "/var/cache/apt/archives")
        box.bind(CACHE / "pip", "/root/.cache/pip")
        copy_checkout(root / "opt/bart")
        box.run("update-ca-certificates")
        yield box
    finally:
        stray = box.leftover_processes()
        for pid in stray:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        box.close()
        shutil.rmtree(root, ignore_errors=True)
        lock.close()
        assert not stray, f"processes were left running in the chroot: {stray}"


def firstboot(box: Chroot) -> None:
    """Run bart-firstboot.service's commands as systemd would (EnvironmentFile, ${VAR})."""
    unit = (box.root / "etc/systemd/system/bart-firstboot.service").read_text()
    env_file = re.search(r"^EnvironmentFile=(\S+)$", unit, re.M)
    assert env_file
    env: dict[str, str] = {}
    for line in (box.root / env_file.group(1).lstrip("/")).read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    for line in re.findall(r"^ExecStart(?:Post)?=(.+)$", unit, re.M):
        argv = [re.sub(r"^\$\{(\w+)\}$", lambda m: env.get(m.group(1), ""), a)
                for a in shlex.split(line)]
        box.run(*argv)


def check_doctor(box: Chroot) -> None:
    """`bart node doctor --offline` runs as the node's user and finds the node and its keys."""
    doctor = box.run("setpriv", "--reuid=bart", "--regid=bart", "--clear-groups",
                     "/opt/bart/.venv/bin/bart", "node", "doctor", "--offline", "--json",
                     "--data-dir", "/var/lib/bart", check=False)
    # In a chroot there is no wlan0 and no running service: doctor reports
    # failures (exit 1), but it must run and say so, not crash.
    assert doctor.returncode in (0, 1), doctor.stdout + doctor.stderr
    report = json.loads(doctor.stdout)
    status = {c["name"]: c["status"] for c in report["checks"]}
    assert status.get("node") == "ok" and status.get("keys") == "ok", report


def bart_units(root: Path) -> list[str]:
    """Every bart-* file under /etc/systemd (units and their enablement links)."""
    return sorted(str(p.relative_to(root)) for p in (root / "etc/systemd").rglob("bart*"))


def test_install_sh_on_fresh_bookworm(chroot: Chroot) -> None:
    box = chroot
    root = box.root
    started = time.monotonic()

    # -- plain: to try Bart. Packages, .venv and bart; nothing at boot, no user.
    plain = box.run("bash", "/opt/bart/install.sh", timeout=1500)
    log(f"install.sh: {time.monotonic() - started:.0f} s\n{plain.stdout}")
    assert "nothing starts at boot" in plain.stdout, plain.stdout[-3000:]
    assert box.run("getent", "passwd", "bart", check=False).returncode == 2  # no such user
    assert not (root / "var/lib/bart").exists()
    assert not (root / "etc/bart").exists()
    assert bart_units(root) == []
    assert box.run("/opt/bart/.venv/bin/bart", "--version").stdout.startswith("bart ")
    # mosquitto was installed for its program: its service (the package enables it) not
    assert box.run("systemctl", "is-enabled", "mosquitto",
                   check=False).stdout.strip() == "disabled"
    assert "Raspberry Pi" not in plain.stdout  # this is no Pi
    again = box.run("bash", "/opt/bart/install.sh", timeout=600)
    assert "nothing to do" in again.stdout, again.stdout[-3000:]

    # -- install: node mode with the hotspot, in a chroot (no service started)
    first = box.run("bash", "/opt/bart/install.sh", "--hotspot", timeout=1500)
    out = first.stdout + first.stderr
    log(f"install.sh --hotspot: {time.monotonic() - started:.0f} s\n{first.stdout}")
    assert "not started" in out, out[-3000:]
    assert not (root / "usr/sbin/policy-rc.d").exists(), "install.sh left its policy-rc.d"

    # -- layout
    assert "bart:" in box.run("getent", "passwd", "bart").stdout
    data = root / "var/lib/bart"
    assert data.is_dir() and oct(data.stat().st_mode & 0o777) == "0o750"
    for rel in ("etc/systemd/system/bart-node.service", "etc/systemd/system/bart-firstboot.service",
                "etc/systemd/system/bart-firewall.service",
                "etc/systemd/system/bart-hostapd.service",
                "etc/systemd/system/bart-dnsmasq.service",
                "etc/systemd/journald.conf.d/bart.conf",
                "etc/NetworkManager/conf.d/bart-hotspot.conf",
                "etc/bart/hostapd.conf", "etc/bart/dnsmasq.conf", "etc/bart/nftables.nft"):
        assert (root / rel).is_file(), rel
    wants = root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("bart-node.service", "bart-firstboot.service", "bart-hostapd.service",
                 "bart-dnsmasq.service"):
        assert (wants / unit).is_symlink(), f"{unit} not enabled"
    assert (root / "etc/systemd/system/sysinit.target.wants/bart-firewall.service").is_symlink()
    for pkg in ("mosquitto", "hostapd", "dnsmasq-base", "nftables", "python3-venv"):
        assert "install ok installed" in box.run(
            "dpkg-query", "-W", "-f=${Status}", pkg).stdout, pkg
    for distro_unit in ("mosquitto", "hostapd"):  # ours run them
        assert box.run("systemctl", "is-enabled", distro_unit,
                       check=False).stdout.strip() == "disabled", distro_unit
    assert "ExecStart=/opt/bart/.venv/bin/bart node run --data-dir /var/lib/bart" in (
        root / "etc/systemd/system/bart-node.service").read_text()
    # the units, checked by this system's own systemd, with its real executables
    verify = box.run("systemd-analyze", "verify", "/etc/systemd/system/bart-node.service",
                     "/etc/systemd/system/bart-firewall.service",
                     "/etc/systemd/system/bart-hostapd.service",
                     "/etc/systemd/system/bart-dnsmasq.service", check=False)
    assert verify.returncode == 0 and "Unknown" not in verify.stdout + verify.stderr, (
        verify.stdout + verify.stderr)

    # -- the bart command runs there
    assert box.run("/opt/bart/.venv/bin/bart", "--version").stdout.startswith("bart ")

    # -- a second run changes nothing
    again = box.run("bash", "/opt/bart/install.sh", "--hotspot", timeout=600)
    assert "nothing to do" in again.stdout, again.stdout[-3000:]

    # -- first boot: the volunteer's file on the boot partition makes the node here
    (root / "boot/firmware").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "opt/bart/firmware-config/bart-node.env.example",
                root / "boot/firmware/bart-node.env")
    firstboot(box)
    key = data / "keys/signing.key"
    assert key.is_file() and oct(key.stat().st_mode & 0o777) == "0o600"
    bart_uid = int(box.run("id", "-u", "bart").stdout)
    assert key.stat().st_uid == bart_uid and (data / "node.toml").stat().st_uid == bart_uid

    # -- bart node doctor --offline runs there (as the node's user) and finds the node
    check_doctor(box)
    assert oct(data.stat().st_mode & 0o777) == "0o750"

    # -- uninstall: our files go, the node's data stays, mosquitto is as it was
    gone = box.run("bash", "/opt/bart/install.sh", "--uninstall", timeout=300)
    log(f"install.sh --uninstall:\n{gone.stdout}")
    assert "uninstalled" in gone.stdout, gone.stdout
    assert not list((root / "etc/systemd/system").rglob("bart-*"))
    assert not (root / "etc/bart").exists()
    assert not (root / "etc/systemd/journald.conf.d/bart.conf").exists()
    assert key.is_file(), "uninstall must keep the node's keys"
    # hostapd's package enabled it before the node: so again. mosquitto was disabled
    # before the node (the plain run installed it for its program): so it stays.
    for distro_unit, was in (("hostapd", "enabled"), ("mosquitto", "disabled")):
        assert box.run("systemctl", "is-enabled", distro_unit,
                       check=False).stdout.strip() == was, distro_unit
    assert "nothing to uninstall" in box.run("bash", "/opt/bart/install.sh",
                                             "--uninstall").stdout

    # -- node mode without the hotspot, on the same system: node units only
    node = box.run("bash", "/opt/bart/install.sh", "--node", timeout=600)
    assert "not started" in node.stdout, node.stdout
    units = sorted(p.name for p in (root / "etc/systemd/system").glob("bart-*.service"))
    assert units == ["bart-firstboot.service", "bart-node.service"]
    assert not (root / "etc/bart/hostapd.conf").exists()
    assert (wants / "bart-node.service").is_symlink()

    # -- a plain run on a machine with a node: the node's files stay as they are
    before = {p: p.read_bytes() for p in (root / "etc/systemd").rglob("bart*") if p.is_file()}
    kept = box.run("bash", "/opt/bart/install.sh", timeout=600)
    assert "A node is installed on this machine" in kept.stdout, kept.stdout
    assert "--node" in kept.stdout and "nothing to do" in kept.stdout, kept.stdout
    assert before == {p: p.read_bytes() for p in (root / "etc/systemd").rglob("bart*")
                      if p.is_file()}
    box.run("bash", "/opt/bart/install.sh", "--uninstall", timeout=300)

    # -- a plain run on a Raspberry Pi says which flag makes a node. (Debian's
    # archive has no python3-lgpio, Raspberry Pi OS's has: trying Bart goes on without.)
    (root / "tmp/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\x00")
    pi = subprocess.run(["chroot", str(root), "bash", "/opt/bart/install.sh"],
                        env={**ENV, "BART_DEVICE_MODEL": "/tmp/model"}, text=True,
                        capture_output=True, timeout=900)
    assert pi.returncode == 0, pi.stdout[-3000:] + pi.stderr[-3000:]
    assert "python3-lgpio is not available" in pi.stderr, pi.stderr
    assert "This is a Raspberry Pi" in pi.stdout, pi.stdout
    assert "sudo ./install.sh --hotspot" in pi.stdout and "sudo ./install.sh --node" in pi.stdout
    assert box.run("getent", "passwd", "bart").returncode == 0  # made by --node above, kept
    assert bart_units(root) == []
    log(f"whole test: {time.monotonic() - started:.0f} s after the root was ready")
