#!/usr/bin/env bash
# Install what the remote side of the integration tests needs on a Debian bookworm host:
# sshd, munge, Slurm, Son of Grid Engine, Slurm's Torque wrappers (unpacked, they conflict
# with gridengine-client), the unprivileged test user, cwltool as its CWL runner,
# Chromium with its WebDriver for the dashboard's browser test, PostgreSQL for the archive of
# finished jobs, and what builds the image and runs a real node (podman, mmdebstrap,
# containerd, runc, CNI plugins, iptables).
#
# Idempotent and fast when everything is present. Only one-time, root-owned system setup
# happens here; daemons are started per test session by cerise/devenv/*.py.
# Paths and the user name must match cerise/devenv/system.py.
set -euo pipefail

PREFIX=/opt/cerise-test
TEST_USER=cerise-test
CWLTOOL_VERSION=3.3.20260925135507
PACKAGES=(
    openssh-server openssh-client
    munge
    slurm-wlm slurm-client
    slurmdbd mariadb-server  # Slurm's accounting (cerise/devenv/slurmdbd.py, mariadb.py)
    libslurm-perl libslurmdb-perl libswitch-perl
    gridengine-master gridengine-exec gridengine-client
    python3-venv
    chromium chromium-driver # the dashboard's browser test (Selenium drives it headless)
    curl jq                  # the documentation's curl examples, run by a test
    postgresql               # the archive of finished jobs (cerise/devenv/postgres.py)
    # The image (tools/build-image.sh) and the test node (cerise/devenv/node.py):
    podman runc mmdebstrap
    containerd containernetworking-plugins iptables conntrack
    dnsmasq-base             # the node's DNS for cluster.local
)

export DEBIAN_FRONTEND=noninteractive

if [[ $(id -u) -ne 0 ]]; then
    echo "install-system.sh: must run as root" >&2
    exit 1
fi

log() { echo "install-system: $*" >&2; }

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) != installed ]]; then
            echo "$pkg"
        fi
    done
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    debconf-set-selections <<EOF
gridengine-common shared/gridenginemaster string $(hostname)
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridengineconfig boolean true
EOF
    # Keep maintainer scripts from starting any daemon; the test fixtures start their own.
    local own_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        own_policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$own_policy"
        chmod 755 "$own_policy"
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ -n $own_policy ]]; then
        rm -f "$own_policy"
        trap - EXIT
    fi
}

ensure_munge_key() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating the munge key"
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
}

# slurm-wlm-torque conflicts with gridengine-client, so it is unpacked instead of installed,
# at the version of the installed Slurm. Its wrappers run sbatch & co. from their own directory.
unpack_torque_wrappers() {
    local version stamp=$PREFIX/torque/.version bindir=$PREFIX/torque/usr/bin
    version=$(dpkg-query -W -f='${Version}' slurm-client)
    if [[ -f $stamp && $(<"$stamp") == "$version" ]]; then
        return 0
    fi
    log "unpacking slurm-wlm-torque $version into $PREFIX/torque"
    local tmp
    tmp=$(mktemp -d)
    chown _apt "$tmp" # apt fetches as _apt
    if ! (cd "$tmp" && apt-get download -qq "slurm-wlm-torque=$version"); then
        apt-get update -qq
        (cd "$tmp" && apt-get download -qq "slurm-wlm-torque=$version")
    fi
    rm -rf "$PREFIX/torque"
    mkdir -p "$PREFIX/torque"
    dpkg -x "$tmp"/slurm-wlm-torque_*.deb "$PREFIX/torque"
    rm -rf "$tmp"
    local tool
    for tool in sbatch squeue scancel scontrol; do
        ln -sf "/usr/bin/$tool" "$bindir/$tool"
    done
    chmod -R a+rX "$PREFIX/torque"
    echo "$version" >"$stamp"
}

ensure_test_user() {
    if ! id -u "$TEST_USER" >/dev/null 2>&1; then
        log "creating user $TEST_USER"
        useradd --create-home --home-dir "/home/$TEST_USER" --shell /bin/bash "$TEST_USER"
    fi
    # '*' instead of the locked '!': no password works, but sshd (UsePAM no) accepts key logins.
    if [[ $(getent shadow "$TEST_USER" | cut -d: -f2) != '*' ]]; then
        usermod --password '*' "$TEST_USER"
    fi
}

install_cwltool() {
    local venv=$PREFIX/cwltool stamp=$PREFIX/cwltool/.version
    if [[ ! -f $stamp || $(<"$stamp") != "$CWLTOOL_VERSION" ]]; then
        log "installing cwltool $CWLTOOL_VERSION into $venv"
        rm -rf "$venv"
        (umask 022 && /usr/bin/python3 -m venv "$venv")
        (umask 022 && "$venv/bin/pip" install -q "cwltool==$CWLTOOL_VERSION")
        chmod -R a+rX "$venv"
        echo "$CWLTOOL_VERSION" >"$stamp"
    fi
    ln -sfn "$venv/bin/cwltool" /usr/local/bin/cwltool
}

install_packages
ensure_munge_key
mkdir -p "$PREFIX"
chmod 755 "$PREFIX"
unpack_torque_wrappers
ensure_test_user
install_cwltool
