#!/usr/bin/env bash
# Bart installer: Debian packages, a Python virtual environment in .venv and
# the bart package (editable). Idempotent: a second run changes nothing.
#
# Targets Debian 12 (bookworm) and Raspberry Pi OS (bookworm). Runs as root;
# re-executes itself with sudo when started as another user.
set -Eeuo pipefail

usage() {
    cat <<'EOF'
Usage: ./install.sh [--node | --hotspot | --dev | --uninstall] [--mesh-radio IFACE]
                    [--no-start] [--help]

Install Bart on this machine. Safe to run again: it only does what is missing.

  (no option)  try Bart: Debian packages (mosquitto mosquitto-clients python3
               python3-venv python3-pip sqlite3 ca-certificates), a virtual
               environment in .venv and the bart command in it (editable
               install). Nothing starts at boot: no system user, no
               services, no /var/lib/bart. Then: .venv/bin/bart demo.
               (mosquitto.service is disabled if this run installed it: the
               demo starts brokers of its own.)
  --node       a node at a community centre: all of the above, on a
               Raspberry Pi also python3-lgpio (GPIO backend) from the
               Raspberry Pi archive; then the system user 'bart', the data
               directory /var/lib/bart, the units bart-node.service and
               bart-firstboot.service (enabled at boot; they do nothing
               until a node exists) and, on a Raspberry Pi, journald
               settings that spare the SD card (docs/deploy.md). Put the
               repository where user bart can read it, e.g. /opt/bart.
  --hotspot    a node (--node) with its Wi-Fi hotspot and captive portal:
               also hostapd, dnsmasq-base, nftables, rfkill (Debian
               packages), /etc/bart/{hostapd.conf,dnsmasq.conf,nftables.nft}
               rendered from the node's settings and checked by dnsmasq and
               nft, and the units bart-firewall, bart-hostapd and
               bart-dnsmasq.
  --mesh-radio IFACE
               a node (--node) linked to other community centres by a
               second Wi-Fi adapter (IFACE, e.g. wlan1) as an 802.11s mesh
               point with batman-adv: also batctl, wpasupplicant, iw,
               rfkill, kmod (Debian packages). Until node.toml has a
               complete [mesh_radio] table it adds one, commented out, for
               you to fill in (address, passphrase) and changes no network
               setting; then wpa_supplicant, batman-adv, NetworkManager and
               module files rendered from it, and bart-meshradio.service.
  --no-start   with --node or --hotspot: enable the units but start or
               restart nothing (an SD-card image, a chroot). Implied when
               systemd is not running.
  --uninstall  stop, disable and remove what a node install added (units,
               /etc/bart, drop-ins, the firewall table) and re-enable
               mosquitto.service if it was enabled before. Keeps the node's
               data and keys (/var/lib/bart), the user bart, .venv and the
               Debian packages.
  --dev        a development machine: the packages of a plain run plus
               chromium, postgresql, wrk, xmlsec1, strace, iproute2, git, dnsmasq-base,
               nftables, hostapd, debootstrap, valgrind, gcc, wpasupplicant,
               batctl, kmod, nginx-light (binaries for the tests and benchmarks; no
               service is configured), and the package with its 'dev' extra
               (tests, linters). No system user, no units; touches no
               network settings.
  -h, --help   show this help and exit

After installing:
  .venv/bin/bart demo     run the demo
  .venv/bin/pytest        run the tests (after --dev)
EOF
}

# ---------------------------------------------------------------- arguments
MODE=plain # plain: packages, .venv, bart; node: also user, data dir, units; dev: test tools
NODE_FLAG=0
DEV_FLAG=0
HOTSPOT=0
MESH_RADIO="" # the mesh radio's interface (--mesh-radio IFACE)
MESH_FLAG=0
SERVICES=0
NO_START=0
NO_START_FLAG=0
UNINSTALL=0
ARGS=("$@") # kept whole for the sudo re-run below
for ((i = 0; i < ${#ARGS[@]}; i++)); do
    arg="${ARGS[i]}"
    case "$arg" in
        --node) NODE_FLAG=1 ;;
        --dev) DEV_FLAG=1 ;;
        --hotspot) HOTSPOT=1 ;;
        --mesh-radio=*) MESH_FLAG=1 MESH_RADIO="${arg#--mesh-radio=}" ;;
        --mesh-radio)
            i=$((i + 1))
            MESH_FLAG=1 MESH_RADIO="${ARGS[i]:-}"
            ;;
        --no-start) NO_START=1 NO_START_FLAG=1 ;;
        --uninstall) UNINSTALL=1 ;;
        -h | --help) usage; exit 0 ;;
        *)
            echo "install.sh: unknown option: $arg" >&2
            usage >&2
            exit 2
            ;;
    esac
done
if [[ $MESH_FLAG -eq 1 ]] && ! [[ $MESH_RADIO =~ ^[A-Za-z0-9_][A-Za-z0-9_.]{0,14}$ ]]; then
    echo "install.sh: --mesh-radio needs the Wi-Fi interface of the mesh adapter, e.g." \
        "--mesh-radio wlan1 (letters, digits, '_' and '.'; at most 15), not '$MESH_RADIO'" >&2
    exit 2
fi
if [[ $DEV_FLAG -eq 1 && ($NODE_FLAG -eq 1 || $HOTSPOT -eq 1 || $UNINSTALL -eq 1 \
    || -n $MESH_RADIO) ]]; then
    echo "install.sh: --dev touches no network settings and makes no node: it cannot be" \
        "combined with --node, --hotspot, --mesh-radio or --uninstall" >&2
    exit 2
fi
if [[ $UNINSTALL -eq 1 && ($NODE_FLAG -eq 1 || $HOTSPOT -eq 1 || -n $MESH_RADIO) ]]; then
    echo "install.sh: --uninstall cannot be combined with --node, --hotspot or --mesh-radio" >&2
    exit 2
fi
if [[ $DEV_FLAG -eq 1 ]]; then
    MODE=dev
elif [[ $NODE_FLAG -eq 1 || $HOTSPOT -eq 1 || -n $MESH_RADIO ]]; then
    MODE=node # --hotspot and --mesh-radio are kinds of node
fi
if [[ $NO_START_FLAG -eq 1 && $MODE != node && $UNINSTALL -eq 0 ]]; then
    echo "install.sh: --no-start is about a node's services, and this run installs none:" \
        "add --node (or --hotspot) to install a node without starting it" >&2
    exit 2
fi

# --------------------------------------------------------------------- root
SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/$(basename "${BASH_SOURCE[0]}")"
if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        echo "==> not root: re-running with sudo"
        exec sudo -- bash "$SCRIPT_PATH" "$@"
    fi
    echo "install.sh: must run as root, and sudo is not installed;" \
        "run it as root (su -c '$SCRIPT_PATH $*')" >&2
    exit 1
fi

REPO="$(dirname "$SCRIPT_PATH")"
cd "$REPO"

VENV="$REPO/.venv"
STAMP="$VENV/.bart-install-stamp"
SYS_PYTHON=/usr/bin/python3
CHANGED=0
STEP="starting"

POLICY_RC=/usr/sbin/policy-rc.d
OUR_POLICY_RC=0 # 1 while our own policy-rc.d keeps apt from starting services

on_exit() {
    local rc=$?
    if [[ $OUR_POLICY_RC -eq 1 ]]; then
        rm -f "$POLICY_RC"
    fi
    if [[ $rc -ne 0 ]]; then
        echo "!! install.sh failed (exit $rc) during step: $STEP" >&2
    fi
}
trap on_exit EXIT

step() { STEP="$1"; }
say() { echo "==> $*"; }
warn() { echo "==> WARNING: $*" >&2; }
die() { echo "!! $*" >&2; exit 1; }

# --------------------------------------------------------------- the system
step "checking the operating system"
OS_ID="" OS_LIKE="" OS_CODENAME="" OS_PRETTY=""
if [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    OS_ID="$(. /etc/os-release && echo "${ID:-}")"
    # shellcheck disable=SC1091
    OS_LIKE="$(. /etc/os-release && echo "${ID_LIKE:-}")"
    # shellcheck disable=SC1091
    OS_CODENAME="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    # shellcheck disable=SC1091
    OS_PRETTY="$(. /etc/os-release && echo "${PRETTY_NAME:-unknown}")"
fi
if [[ ($OS_ID == debian || $OS_ID == raspbian) && $OS_CODENAME == bookworm ]]; then
    say "system: $OS_PRETTY"
elif [[ $OS_ID == debian || $OS_ID == raspbian || " $OS_LIKE " == *" debian "* ]]; then
    warn "untested system '$OS_PRETTY' (made for Debian 12 / Raspberry Pi OS bookworm); continuing"
else
    die "unsupported system '${OS_PRETTY:-unknown}': needs Debian 12 (bookworm) or Raspberry Pi OS"
fi
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    die "dpkg-query/apt-get not found: needs a Debian-based system"
fi

# The board's model (BART_DEVICE_MODEL names another file: the tests play a Pi).
MODEL_FILE="${BART_DEVICE_MODEL:-/proc/device-tree/model}"
ON_PI=0
if [[ -r $MODEL_FILE ]] && grep -qa "Raspberry Pi" "$MODEL_FILE"; then
    ON_PI=1
fi

# ------------------------------------------------------- what a node install adds
BART_USER=bart
DATA_DIR="${BART_DATA_DIR:-/var/lib/bart}"
ETC_BART=/etc/bart
# A distribution unit that was enabled before we disabled it gets a note here,
# so that --uninstall enables it again.
WAS_ENABLED="$ETC_BART/.was-enabled-"
NODE_UNITS=(bart-node.service bart-firstboot.service)
HOTSPOT_UNITS=(bart-firewall.service bart-hostapd.service bart-dnsmasq.service)
MESH_UNIT=bart-meshradio.service
# Every file the renderer (bart node system render) may write; all are our own
# names, so nothing of the distribution's is replaced.
SYSTEM_FILES=(
    /etc/systemd/system/bart-node.service
    /etc/systemd/system/bart-firstboot.service
    /etc/systemd/system/bart-firewall.service
    /etc/systemd/system/bart-hostapd.service
    /etc/systemd/system/bart-dnsmasq.service
    /etc/systemd/journald.conf.d/bart.conf
    /etc/NetworkManager/conf.d/bart-hotspot.conf
    "$ETC_BART/hostapd.conf"
    "$ETC_BART/dnsmasq.conf"
    "$ETC_BART/nftables.nft"
    "/etc/systemd/system/$MESH_UNIT"
    /etc/NetworkManager/conf.d/bart-meshradio.conf
    /etc/modules-load.d/bart-batman-adv.conf
    "$ETC_BART/meshradio-wpa_supplicant.conf"
)

SYSTEMD_RUNNING=0
[[ -d /run/systemd/system ]] && SYSTEMD_RUNNING=1
IN_CHROOT=0
if command -v systemd-detect-virt >/dev/null 2>&1 && systemd-detect-virt --chroot --quiet; then
    IN_CHROOT=1
fi
if [[ $NO_START -eq 0 && ($SYSTEMD_RUNNING -eq 0 || $IN_CHROOT -eq 1) ]]; then
    NO_START=1
    NO_START_WHY="systemd is not running here (chroot, container or image)"
else
    NO_START_WHY="--no-start"
fi

# systemctl that only starts or stops anything when allowed to.
unit_active() { [[ $NO_START -eq 0 ]] && systemctl is-active --quiet "$1" 2>/dev/null; }

# ---------------------------------------------------------------- uninstall
if [[ $UNINSTALL -eq 1 ]]; then
    step "uninstalling the node's system files"
    removed=0
    if command -v systemctl >/dev/null 2>&1; then
        for unit in "$MESH_UNIT" "${HOTSPOT_UNITS[@]}" "${NODE_UNITS[@]}"; do
            [[ -e /etc/systemd/system/$unit ]] || continue
            if unit_active "$unit"; then
                systemctl stop "$unit"
                say "stopped $unit"
            fi
            systemctl disable --quiet "$unit" 2>/dev/null || true
            removed=1
        done
    fi
    if [[ $NO_START -eq 0 ]] && command -v nft >/dev/null 2>&1 \
        && nft list table inet bart >/dev/null 2>&1; then
        nft delete table inet bart
        say "firewall table inet bart removed"
        removed=1
    fi
    journald_changed=0 nm_changed=0
    for f in "${SYSTEM_FILES[@]}"; do
        if [[ -e $f ]]; then
            rm -f "$f"
            say "removed $f"
            removed=1
            [[ $f == *journald* ]] && journald_changed=1
            [[ $f == *NetworkManager* ]] && nm_changed=1
        fi
    done
    for mark in "$WAS_ENABLED"*; do
        [[ -e $mark ]] || continue
        unit="${mark#"$WAS_ENABLED"}"
        if command -v systemctl >/dev/null 2>&1; then
            systemctl enable --quiet "$unit" 2>/dev/null \
                && say "$unit enabled again, as it was before the node"
            if [[ $NO_START -eq 0 ]]; then systemctl start "$unit" || true; fi
        fi
        rm -f "$mark"
        removed=1
    done
    rmdir "$ETC_BART" 2>/dev/null || true
    if [[ $removed -eq 1 && $NO_START -eq 0 ]]; then
        systemctl daemon-reload
        [[ $journald_changed -eq 1 ]] && systemctl restart systemd-journald
        [[ $nm_changed -eq 1 ]] && unit_active NetworkManager && systemctl reload NetworkManager
    fi
    if [[ $removed -eq 0 ]]; then
        say "nothing to uninstall: no node system files here"
    else
        say "uninstalled the node's system files"
    fi
    echo "Kept: the node's data and keys in $DATA_DIR, the user $BART_USER, .venv and the"
    echo "Debian packages. Remove them by hand if you mean it: rm -r $DATA_DIR;"
    echo "userdel $BART_USER; apt-get remove hostapd dnsmasq-base nftables batctl."
    exit 0
fi

# A node installed with --hotspot keeps its hotspot when install.sh runs again.
if [[ $MODE == node && $HOTSPOT -eq 0 && -e $ETC_BART/hostapd.conf ]]; then
    say "hotspot installed before: keeping it (./install.sh --uninstall removes it)"
    HOTSPOT=1
fi
# The mesh radio's files are rendered whenever node.toml has a [mesh_radio]
# table (so also at first boot and on every later run): its tools must be here.
MESH_TOOLS=0
if [[ $MODE == node ]] && { [[ -n $MESH_RADIO || -e /etc/systemd/system/$MESH_UNIT ]] \
    || grep -qsE '^[[:space:]]*\[[[:space:]]*mesh_radio[[:space:]]*\]' "$DATA_DIR/node.toml"; }; then
    MESH_TOOLS=1
fi

# ---------------------------------------------------------- Debian packages
step "installing Debian packages"
pkg_installed() {
    local status
    status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" || return 1
    [[ $status == *" ok installed" ]]
}

PACKAGES=(mosquitto mosquitto-clients python3 python3-venv python3-pip sqlite3 ca-certificates)
if [[ $ON_PI -eq 1 ]]; then
    PACKAGES+=(python3-lgpio) # gpiozero's pin backend; only in the Raspberry Pi archive
    if [[ $MODE != node ]] && ! pkg_installed python3-lgpio \
        && ! apt-cache policy python3-lgpio 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        # Trying Bart needs no real pins (the demo's are mock pins); a node does.
        warn "python3-lgpio is not available here (it is in the Raspberry Pi archive of" \
            "Raspberry Pi OS): real panic buttons will not work; the demo does"
        unset 'PACKAGES[-1]'
    fi
fi
if [[ $HOTSPOT -eq 1 ]]; then
    # dnsmasq-base: the binary without the distribution's service, which would
    # answer on every interface and make itself the node's own resolver.
    PACKAGES+=(hostapd dnsmasq-base nftables iproute2 rfkill)
fi
if [[ $MESH_TOOLS -eq 1 ]]; then
    # wpa_supplicant joins the 802.11s mesh (SAE), batctl shows batman-adv's
    # view (batctl n, batctl o), iw the radio's (iw list, station dump).
    PACKAGES+=(wpasupplicant batctl iw iproute2 rfkill kmod)
fi
if [[ $MODE == dev ]]; then
    # The hotspot tools are here only so that the tests can run them.
    PACKAGES+=(chromium postgresql wrk iproute2 git dnsmasq-base nftables hostapd debootstrap systemd xmlsec1 strace)
    PACKAGES+=(busybox curl) # the "phone" of tests/system/test_captive_netns.py: udhcpc, curl
    PACKAGES+=(valgrind)     # bench/ingest_instructions.py counts instructions with callgrind
    # tests/integration/test_clock.py builds a small LD_PRELOAD library that shifts a
    # node's wall clock (libfaketime 0.9.10 breaks Python 3.11's sleeps and waits)
    PACKAGES+=(gcc)
    # tests/integration/test_meshradio_tools.py: wpa_supplicant parses the mesh
    # radio's file, systemd-analyze finds modprobe, batctl reads batman-adv.
    PACKAGES+=(wpasupplicant batctl kmod)
    PACKAGES+=(bind9-dnsutils) # dig: an independent mDNS client for the discovery tests
    PACKAGES+=(nginx-light)    # docs/central-scale.md's proxy config, run by tests/system
    PACKAGES+=(shellcheck)     # tests/unit/test_install_script.py lints install.sh and .ci/run
fi

MISSING=()
for pkg in "${PACKAGES[@]}"; do
    pkg_installed "$pkg" || MISSING+=("$pkg")
done
MOSQUITTO_NEW=0
if [[ ${#MISSING[@]} -eq 0 ]]; then
    say "Debian packages present (${#PACKAGES[@]})"
else
    say "installing Debian packages: ${MISSING[*]}"
    for pkg in "${MISSING[@]}"; do [[ $pkg == mosquitto ]] && MOSQUITTO_NEW=1; done
    export DEBIAN_FRONTEND=noninteractive
    # A first boot often has apt's daily job (or another install) holding the
    # dpkg lock: wait for it up to 10 minutes instead of failing at once.
    APT_WAIT=(-o DPkg::Lock::Timeout=600)
    say "(if another apt or dpkg runs, this waits for it to finish)"
    apt-get "${APT_WAIT[@]}" update -qq
    if [[ " ${MISSING[*]} " == *" python3-lgpio "* ]] \
        && ! apt-cache policy python3-lgpio 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        die "python3-lgpio is not available: on a Raspberry Pi use Raspberry Pi OS (bookworm), whose archive (archive.raspberrypi.com) packages it"
    fi
    if [[ $NO_START -eq 1 && ! -e $POLICY_RC ]]; then
        # Packages must not start their daemons here ($NO_START_WHY).
        printf '#!/bin/sh\n# install.sh: no service starts while packages are installed\nexit 101\n' \
            >"$POLICY_RC"
        chmod 0755 "$POLICY_RC"
        OUR_POLICY_RC=1
    fi
    apt-get "${APT_WAIT[@]}" install -y -qq "${MISSING[@]}"
    if [[ $OUR_POLICY_RC -eq 1 ]]; then
        rm -f "$POLICY_RC"
        OUR_POLICY_RC=0
    fi
    if [[ " ${MISSING[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null 2>&1; then
        # Installed for the tests (--dev), which start their own: not on port 80 at boot.
        systemctl disable --now --quiet nginx 2>/dev/null || true
    fi
    CHANGED=1
fi

# ----------------------------------------------------------- mosquitto.service
# The node (and the demo, and the tests) supervise their own brokers on their
# own ports: the distribution's mosquitto.service must neither run nor start at
# boot. A plain run leaves one it did not install alone: it may be someone's.
step "disabling the distribution's mosquitto.service"
remember_enabled() {
    # --uninstall enables it again. Only a node install keeps this note.
    if [[ $MODE == node && ! -e $WAS_ENABLED$1 ]] \
        && systemctl is-enabled --quiet "$1" 2>/dev/null; then
        mkdir -p "$ETC_BART"
        : >"$WAS_ENABLED$1"
    fi
}
if [[ $MODE == plain && $MOSQUITTO_NEW -eq 0 ]]; then
    : # not ours to switch off
elif command -v systemctl >/dev/null 2>&1; then
    if [[ -d /run/systemd/system ]]; then
        # systemd is running: stop and disable.
        if systemctl is-enabled --quiet mosquitto 2>/dev/null \
            || systemctl is-active --quiet mosquitto 2>/dev/null; then
            remember_enabled mosquitto.service
            systemctl disable --now --quiet mosquitto
            say "mosquitto.service stopped and disabled (bart runs its own brokers)"
            CHANGED=1
        else
            say "mosquitto.service already disabled"
        fi
    else
        # No systemd as init (container, CI, chroot): only drop the boot links.
        if systemctl is-enabled --quiet mosquitto 2>/dev/null; then
            remember_enabled mosquitto.service
            if systemctl disable --quiet mosquitto >/dev/null 2>&1; then
                say "mosquitto.service disabled (systemd not running)"
                CHANGED=1
            else
                warn "could not disable mosquitto.service (systemd not running); continuing"
            fi
        else
            say "mosquitto.service already disabled (systemd not running)"
        fi
    fi
else
    say "no systemctl: nothing to disable for mosquitto"
fi
if [[ $MOSQUITTO_NEW -eq 1 && ! -d /run/systemd/system && -x /etc/init.d/mosquitto ]]; then
    # Without systemd the package's postinst may have started the SysV daemon.
    /etc/init.d/mosquitto stop >/dev/null 2>&1 || true
fi

# ------------------------------------------------------------------- Python
step "checking Debian's Python"
[[ -x $SYS_PYTHON ]] || die "$SYS_PYTHON not found (package python3)"
PY_VERSION="$("$SYS_PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
"$SYS_PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "$SYS_PYTHON is Python $PY_VERSION; Bart needs Python >= 3.11 (Debian 12 bookworm has 3.11)"
say "Python: $SYS_PYTHON $PY_VERSION"

# ---------------------------------------------------------------------- venv
step "creating the virtual environment .venv"
WANT_SYSTEM_SITE=false
VENV_ARGS=()
if [[ $ON_PI -eq 1 ]]; then
    WANT_SYSTEM_SITE=true # so gpiozero in the venv finds the Pi's python3-lgpio
    VENV_ARGS+=(--system-site-packages)
fi

venv_reason="" # why .venv must be (re)made; empty when it is fine
if [[ ! -e $VENV ]]; then
    venv_reason="missing"
elif ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    venv_reason="broken"
elif ! "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    venv_reason="Python older than 3.11"
else
    have_system_site="$(sed -n 's/^include-system-site-packages *= *//p' "$VENV/pyvenv.cfg" 2>/dev/null \
        | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]')"
    [[ $have_system_site == true ]] || have_system_site=false
    if [[ $have_system_site != "$WANT_SYSTEM_SITE" ]]; then
        venv_reason="include-system-site-packages=$have_system_site, want $WANT_SYSTEM_SITE"
    fi
fi

if [[ -n $venv_reason ]]; then
    say "creating .venv ($venv_reason) with $SYS_PYTHON${VENV_ARGS[*]:+ ${VENV_ARGS[*]}}"
    rm -rf "$VENV"
    "$SYS_PYTHON" -m venv "${VENV_ARGS[@]}" "$VENV"
    step "upgrading pip in .venv"
    say "upgrading pip in .venv"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    CHANGED=1
else
    venv_home="$(sed -n 's/^home *= *//p' "$VENV/pyvenv.cfg" 2>/dev/null || true)"
    if [[ $venv_home != /usr/bin ]]; then
        say ".venv present (made from ${venv_home:-?}, not $SYS_PYTHON; delete .venv to rebuild it)"
    else
        say ".venv present"
    fi
fi

# --------------------------------------------------------------- bart itself
step "installing the bart package into .venv"
if [[ $MODE == dev ]]; then
    PIP_TARGET='.[dev]' EXTRAS=dev
else
    PIP_TARGET='.' EXTRAS=none # plain and node install the same package
fi
want_stamp="$( { cat pyproject.toml; printf '\nextras=%s\n' "$EXTRAS"; } | sha256sum | cut -d' ' -f1)"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
if [[ $have_stamp == "$want_stamp" ]] && "$VENV/bin/bart" --version >/dev/null 2>&1; then
    say ".venv up to date (bart$([[ $EXTRAS == dev ]] && echo "[dev]"), pyproject.toml unchanged)"
else
    say "installing bart into .venv: pip install -e '$PIP_TARGET'"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --quiet -e "$PIP_TARGET"
    step "checking the bart command"
    "$VENV/bin/bart" --version >/dev/null \
        || die ".venv/bin/bart --version failed after installing"
    echo "$want_stamp" >"$STAMP"
    CHANGED=1
fi

# ----------------------------------------------------------------- ownership
step "giving .venv to the invoking user"
if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
    owned=("$VENV")
    for d in "$REPO"/*.egg-info; do [[ -e $d ]] && owned+=("$d"); done
    if [[ -n "$(find "${owned[@]}" ! -user "$SUDO_USER" -print -quit 2>/dev/null)" ]]; then
        chown -R -h "$SUDO_USER:$(id -gn "$SUDO_USER")" "${owned[@]}"
        say "ownership: .venv given to $SUDO_USER"
        CHANGED=1
    fi
fi

# ------------------------------------------------------------ node services
# The node runs as its own unprivileged account (DESIGN.md, "Mosquitto and
# users"); its units and the hotspot's files are rendered by bart itself.
if [[ $MODE == node ]]; then
    step "creating the system user $BART_USER"
    if ! getent passwd "$BART_USER" >/dev/null; then
        useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
            --shell /usr/sbin/nologin --comment "Bart node" "$BART_USER"
        say "system user $BART_USER created"
        CHANGED=1
    fi
    if getent group gpio >/dev/null && ! id -nG "$BART_USER" | tr ' ' '\n' | grep -qx gpio; then
        usermod -a -G gpio "$BART_USER" # panic buttons: /dev/gpiochip* on Raspberry Pi OS
        say "user $BART_USER added to group gpio"
        CHANGED=1
    fi

    step "preparing the data directory $DATA_DIR"
    if [[ ! -d $DATA_DIR ]]; then
        install -d -m 0750 -o "$BART_USER" -g "$BART_USER" "$DATA_DIR"
        say "data directory $DATA_DIR created (the node is made at first boot or by bart node init)"
        CHANGED=1
    elif [[ -n "$(find "$DATA_DIR" ! -user "$BART_USER" -print -quit)" ]]; then
        # A node made by root before (sudo bart node init): the service runs as $BART_USER.
        chown -R "$BART_USER:$BART_USER" "$DATA_DIR"
        say "data directory $DATA_DIR given to $BART_USER"
        CHANGED=1
    fi

    step "checking that user $BART_USER can run .venv/bin/bart"
    SERVICES=1
    if ! setpriv --reuid="$BART_USER" --regid="$BART_USER" --clear-groups \
        "$VENV/bin/bart" --version >/dev/null 2>&1; then
        die "user $BART_USER cannot run $VENV/bin/bart (is the repository in a private" \
            "home directory?); move the repository to /opt/bart and run install.sh --node there" \
            "(to try the demo from here, run ./install.sh without --node)"
    fi
fi

MESH_TODO="" # what the operator still has to do for the mesh radio
if [[ $MODE == node && $SERVICES -eq 1 && -n $MESH_RADIO ]]; then
    step "checking the kernel and $MESH_RADIO for the mesh radio"
    if [[ ! -d /sys/module/batman_adv ]] && ! modprobe -n -q batman-adv 2>/dev/null; then
        why=""
        [[ $IN_CHROOT -eq 1 ]] && why=" (in a chroot: this is the build machine's kernel)"
        warn "kernel $(uname -r) has no batman-adv module$why: $MESH_UNIT cannot start on it;" \
            "Raspberry Pi OS and Debian kernels have it"
    fi
    if [[ -r /sys/class/net/$MESH_RADIO/phy80211/name ]]; then
        phy="$(cat "/sys/class/net/$MESH_RADIO/phy80211/name")"
        if iw phy "$phy" info 2>/dev/null | grep -qE '^[[:space:]]+\* mesh point$'; then
            say "$MESH_RADIO ($phy) supports mesh point mode"
        else
            warn "$MESH_RADIO ($phy): its driver does not list 'mesh point' among its interface" \
                "modes (iw phy $phy info): this adapter cannot join the mesh"
        fi
    elif [[ -e /sys/class/net/$MESH_RADIO ]]; then
        die "$MESH_RADIO is not a Wi-Fi interface: --mesh-radio takes the mesh adapter's (e.g. wlan1)"
    else
        say "no interface $MESH_RADIO now (adapter not plugged in?): the mesh starts when it appears"
    fi
fi
if [[ $MODE == node && $SERVICES -eq 1 && -n $MESH_RADIO ]]; then
    step "recording the mesh radio $MESH_RADIO in $DATA_DIR/node.toml"
    # node.meshradio.record_interface: a commented-out [mesh_radio] table to
    # fill in, never an incomplete one (the node would not start).
    record="$("$VENV/bin/python" -c 'import sys
from pathlib import Path
from node.errors import ConfigError
from node.meshradio import record_interface
try:
    r = record_interface(Path(sys.argv[1]), sys.argv[2])
except ConfigError as exc:
    sys.exit(str(exc))
print(r.status, r.message)' "$DATA_DIR/node.toml" "$MESH_RADIO")" \
        || die "mesh radio: see the line above"
    case "${record%% *}" in
        configured) say "${record#* }" ;;
        added)
            say "mesh radio: [mesh_radio] added to $DATA_DIR/node.toml, commented out"
            MESH_TODO="${record#* }"
            CHANGED=1
            ;;
        *) MESH_TODO="${record#* }" ;;
    esac
fi

if [[ $MODE == node && $SERVICES -eq 1 ]]; then
    step "rendering the system files"
    render_args=(node system render --dest / --data-dir "$DATA_DIR" --bart "$VENV/bin/bart")
    [[ $HOTSPOT -eq 1 ]] && render_args+=(--hotspot)
    # Logs in RAM spare an SD card; a laptop that only tries the demo keeps its own.
    [[ $HOTSPOT -eq 0 && $ON_PI -eq 0 ]] && render_args+=(--no-journald)
    rendered="$("$VENV/bin/bart" "${render_args[@]}")" || die "bart node system render failed"
    changed_files="$(sed -n 's/^changed //p' <<<"$rendered")"
    if [[ -n $changed_files ]]; then
        while read -r f; do say "wrote $f"; done <<<"$changed_files"
        CHANGED=1
    else
        say "system files up to date"
    fi

    UNITS=("${NODE_UNITS[@]}")
    # Rendered from node.toml's [mesh_radio] (bart node system render), when it has one.
    if grep -q "/$MESH_UNIT\$" <<<"$rendered"; then
        command -v wpa_supplicant >/dev/null 2>&1 || [[ -x /usr/sbin/wpa_supplicant ]] \
            || die "node.toml has a [mesh_radio] but wpa_supplicant is not installed:" \
                "run ./install.sh --mesh-radio IFACE"
        UNITS+=("$MESH_UNIT")
    fi
    if [[ $HOTSPOT -eq 1 ]]; then
        UNITS+=("${HOTSPOT_UNITS[@]}")
        step "disabling the distribution's hostapd and dnsmasq services"
        # Ours run hostapd and dnsmasq with /etc/bart's files; the distribution's
        # units (hostapd.service is enabled by its package) must not start a
        # second one on the same interface.
        for unit in hostapd.service dnsmasq.service; do
            if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
                remember_enabled "$unit"
                if [[ $NO_START -eq 0 ]]; then
                    systemctl disable --now --quiet "$unit"
                else
                    systemctl disable --quiet "$unit"
                fi
                say "$unit disabled (bart-${unit%.service}.service runs it for the hotspot)"
                CHANGED=1
            fi
        done
        step "checking the hotspot's files with dnsmasq and nft"
        /usr/sbin/dnsmasq --test --conf-file="$ETC_BART/dnsmasq.conf" >/dev/null 2>&1 \
            || die "dnsmasq refuses $ETC_BART/dnsmasq.conf: $(/usr/sbin/dnsmasq --test --conf-file="$ETC_BART/dnsmasq.conf" 2>&1)"
        nft_out="$(/usr/sbin/nft -c -f "$ETC_BART/nftables.nft" 2>&1)" \
            || die "nft refuses $ETC_BART/nftables.nft: $nft_out"
        say "hotspot files checked by dnsmasq and nft"
    fi

    step "enabling the node's units"
    if [[ $NO_START -eq 0 ]]; then
        systemctl daemon-reload
    fi
    for unit in "${UNITS[@]}"; do
        if ! systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            systemctl enable --quiet "$unit"
            say "$unit enabled"
            CHANGED=1
        fi
    done

    if [[ $NO_START -eq 1 ]]; then
        say "services enabled, not started ($NO_START_WHY)"
    else
        step "starting the node's services"
        if grep -q journald <<<"$changed_files"; then
            systemctl restart systemd-journald
        fi
        if grep -q NetworkManager <<<"$changed_files" && systemctl is-active --quiet NetworkManager; then
            systemctl reload NetworkManager
        fi
        for unit in "${UNITS[@]}"; do
            [[ $unit == bart-firstboot.service ]] && continue
            # --no-block: hostapd and the mesh radio wait for their interfaces, the
            # node for node.toml.
            if grep -q "/$unit" <<<"$changed_files" || [[ -n $changed_files && $unit != bart-node.service ]]; then
                systemctl try-restart --quiet "$unit" || true
            fi
            systemctl start --no-block "$unit" || warn "could not start $unit"
        done
        if [[ ! -e $DATA_DIR/node.toml ]]; then
            say "no node yet: create it with bart node init (or bart-node.env at first boot), then: systemctl start bart-node"
        fi
    fi
fi

# --------------------------------------------------------------------- done
step "finishing"
case $MODE in
    plain) WHAT="packages, .venv and the bart command; nothing starts at boot" ;;
    dev) WHAT="packages, test tools, .venv and the bart command; nothing starts at boot" ;;
    *) WHAT="a node: the user $BART_USER, $DATA_DIR and its services" ;;
esac
if [[ $CHANGED -eq 0 ]]; then
    say "nothing to do: everything was already installed ($MODE: $WHAT)"
else
    say "done ($MODE: $WHAT)"
fi
if [[ $MODE != node && -e /etc/systemd/system/bart-node.service ]]; then
    # A node installed before (--node, or install.sh of an earlier version) is left as it is.
    echo "A node is installed on this machine (bart-node.service): this run left it as it"
    echo "was. To update its services too: sudo ./install.sh --node (--hotspot with its"
    echo "hotspot); to remove them: sudo ./install.sh --uninstall."
elif [[ $MODE != node && $ON_PI -eq 1 ]]; then
    echo "This is a Raspberry Pi. For a node at a community centre, run instead:"
    echo "  sudo ./install.sh --hotspot    the node with its Wi-Fi hotspot (docs/deploy.md)"
    echo "  sudo ./install.sh --node       the node alone (no hotspot)"
fi
echo "Next steps:"
if [[ $MODE == node && $SERVICES -eq 1 && ! -e $DATA_DIR/node.toml ]]; then
    echo "  a node for this machine: put bart-node.env on the boot partition and reboot,"
    echo "  or: sudo -u $BART_USER $VENV/bin/bart node init --data-dir $DATA_DIR --name NAME --area AREA --http-host 0.0.0.0"
    echo "  (docs/deploy.md, step 4)"
elif [[ $MODE == node && $SERVICES -eq 1 ]]; then
    echo "  sudo -u $BART_USER $VENV/bin/bart node doctor --data-dir $DATA_DIR    check the node"
fi
if [[ -n $MESH_TODO ]]; then
    echo "  the mesh radio: $MESH_TODO"
elif [[ $MODE == node && $SERVICES -eq 1 ]] && grep -q "/$MESH_UNIT\$" <<<"$rendered"; then
    echo "  the mesh radio: batctl n (its neighbours), batctl o, iw dev IFACE station dump (docs/deploy.md)"
fi
echo "  .venv/bin/bart demo     run the demo"
if [[ $MODE == dev ]]; then
    echo "  .venv/bin/pytest        run the tests"
else
    echo "  ./install.sh --dev && .venv/bin/pytest    to run the tests (development setup)"
fi
