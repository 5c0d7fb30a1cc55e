#!/usr/bin/env bash
# Bart installer: Debian packages, a Python virtual environment in .venv and
# the bart package (editable). Idempotent: a second run changes nothing.
#
# Targets Debian 12 (bookworm) and Raspberry Pi OS (bookworm). Runs as root;
# re-executes itself with sudo when started as another user.
set -Eeuo pipefail

usage() {
    cat <<'EOF'
Usage: ./install.sh [--dev] [--help]

Install Bart on this machine: Debian packages (Mosquitto, Python, SQLite),
a virtual environment in .venv and the bart package (editable install).
Safe to run again: it only does what is missing.

  (no option)  a node: mosquitto mosquitto-clients python3 python3-venv
               python3-pip sqlite3 ca-certificates; on a Raspberry Pi also
               python3-lgpio (GPIO backend) from the Raspberry Pi archive
  --dev        a development machine: the node packages plus chromium,
               postgresql, wrk, iproute2, git, and the package with its
               'dev' extra (tests, linters). Touches no network settings.
  -h, --help   show this help and exit

After installing:
  .venv/bin/bart demo     run the demo
  .venv/bin/pytest        run the tests
EOF
}

# ---------------------------------------------------------------- arguments
MODE=node
for arg in "$@"; do
    case "$arg" in
        --dev) MODE=dev ;;
        -h | --help) usage; exit 0 ;;
        *)
            echo "install.sh: unknown option: $arg" >&2
            usage >&2
            exit 2
            ;;
    esac
done

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

on_exit() {
    local rc=$?
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

ON_PI=0
if [[ -r /proc/device-tree/model ]] && grep -qa "Raspberry Pi" /proc/device-tree/model; then
    ON_PI=1
fi

# ---------------------------------------------------------- Debian packages
step "installing Debian packages"
PACKAGES=(mosquitto mosquitto-clients python3 python3-venv python3-pip sqlite3 ca-certificates)
if [[ $ON_PI -eq 1 ]]; then
    PACKAGES+=(python3-lgpio) # gpiozero's pin backend; only in the Raspberry Pi archive
fi
if [[ $MODE == dev ]]; then
    PACKAGES+=(chromium postgresql wrk iproute2 git)
fi

pkg_installed() {
    local status
    status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" || return 1
    [[ $status == *" ok installed" ]]
}

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
    apt-get update -qq
    if [[ " ${MISSING[*]} " == *" python3-lgpio "* ]] \
        && ! apt-cache policy python3-lgpio 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        die "python3-lgpio is not available: on a Raspberry Pi use Raspberry Pi OS (bookworm), whose archive (archive.raspberrypi.com) packages it"
    fi
    apt-get install -y -qq "${MISSING[@]}"
    CHANGED=1
fi

# ----------------------------------------------------------- mosquitto.service
# The node supervises its own broker on its own port: the distribution's
# mosquitto.service must neither run nor start at boot.
step "disabling the distribution's mosquitto.service"
if command -v systemctl >/dev/null 2>&1; then
    if [[ -d /run/systemd/system ]]; then
        # systemd is running: stop and disable.
        if systemctl is-enabled --quiet mosquitto 2>/dev/null \
            || systemctl is-active --quiet mosquitto 2>/dev/null; then
            systemctl disable --now --quiet mosquitto
            say "mosquitto.service stopped and disabled (the node runs its own broker)"
            CHANGED=1
        else
            say "mosquitto.service already disabled"
        fi
    else
        # No systemd as init (container, CI, chroot): only drop the boot links.
        if systemctl is-enabled --quiet mosquitto 2>/dev/null; then
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
    PIP_TARGET='.[dev]'
else
    PIP_TARGET='.'
fi
want_stamp="$( { cat pyproject.toml; printf '\nmode=%s\n' "$MODE"; } | sha256sum | cut -d' ' -f1)"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
if [[ $have_stamp == "$want_stamp" ]] && "$VENV/bin/bart" --version >/dev/null 2>&1; then
    say ".venv up to date (bart $MODE install, pyproject.toml unchanged)"
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

# --------------------------------------------------------------------- done
step "finishing"
if [[ $CHANGED -eq 0 ]]; then
    say "nothing to do: everything was already installed ($MODE)"
else
    say "done ($MODE)"
fi
echo "Next steps:"
echo "  .venv/bin/bart demo     run the demo"
if [[ $MODE == dev ]]; then
    echo "  .venv/bin/pytest        run the tests"
else
    echo "  ./install.sh --dev && .venv/bin/pytest    to run the tests (development setup)"
fi
