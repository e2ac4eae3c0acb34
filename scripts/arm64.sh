#!/usr/bin/env bash
# waste-edge on linux/arm64 (Raspberry Pi 4/5, Jetson) without the board: an emulated Debian bookworm arm64 root.
#
#   scripts/arm64.sh setup [--extra NAME]...   build (once) the root and its venv, install this checkout's wheel
#   scripts/arm64.sh exec ARGS...              run `waste-edge ARGS...` in the root (host /tmp and this
#                                              repository visible at the same paths, exit status passed on)
#   scripts/arm64.sh python ARGS...            the root venv's python (versions, imports)
#   scripts/arm64.sh check                     can this machine set up the root? (exit 3 + the reason if not)
#   scripts/arm64.sh clean                     delete the root (and the debootstrap package cache)
#
# How: the kernel's binfmt_misc runs aarch64 programs through qemu-user-static, so `debootstrap --arch=arm64`
# builds the root and `chroot` runs it, transparently. Needs root (debootstrap, chroot, mounts). Everything is
# cached under .arm64/ (git-ignored; WASTE_EDGE_ARM64_DIR moves it): a second `setup` only rebuilds and
# reinstalls the wheel. Debian packages come from the mirror of the host's apt sources (WASTE_EDGE_ARM64_MIRROR
# overrides it), the aarch64 wheels from the package index (PIP_INDEX_URL, default PyPI).
#
# The emulated CPU is a board's, not QEMU's "max": WASTE_EDGE_ARM64_CPU=cortex-a72 (default: Raspberry Pi 4, ARMv8.0,
# the strictest), cortex-a76 (Raspberry Pi 5), cortex-a57 (Jetson Nano), cortex-a53, neoverse-n1; /proc/cpuinfo and
# /sys/devices/system/cpu in the root describe that CPU as a board's kernel would (see `enter` below).
# Emulation is about 100x slower than the board: fine for checking that the ARM64 kernels give the same answers,
# meaningless for speed.
#
# Exit status: 3 when this machine cannot set up the root (not root, no binfmt for aarch64, no network to the
# package index or the Debian mirror), with one line saying which; 1 for any other failure.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DIR=${WASTE_EDGE_ARM64_DIR:-$REPO/.arm64}
ROOT=$DIR/root
SUITE=bookworm
VENV=/opt/waste-edge/venv # inside the root
INDEX=${PIP_INDEX_URL:-https://pypi.org/simple}
HOST_TOOLS="qemu-user-static binfmt-support debootstrap"
CANNOT=3

say() { echo "arm64: $*" >&2; }
die() { say "$*"; exit 1; }
cannot() { say "$*"; exit "$CANNOT"; }

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# -- can this machine do it? ---------------------------------------------------------------------------------------

need_root() {
  [ "$(id -u)" = 0 ] || cannot "needs root (debootstrap, chroot and mounts): run it as root, e.g. sudo scripts/arm64.sh $1"
}

native() { [ "$(uname -m)" = aarch64 ]; }

ensure_host_tools() {
  local missing=""
  command -v debootstrap >/dev/null || missing=1
  native || [ -e /usr/bin/qemu-aarch64-static ] || [ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || missing=1
  command -v unshare >/dev/null && command -v chroot >/dev/null || cannot "needs unshare and chroot (util-linux, coreutils)"
  unshare --mount true 2>/dev/null || cannot "cannot create a mount namespace (unshare --mount): a container without CAP_SYS_ADMIN?"
  [ -z "$missing" ] && return 0
  command -v apt-get >/dev/null || cannot "needs $HOST_TOOLS (no apt-get here to install them)"
  say "installing $HOST_TOOLS (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $HOST_TOOLS >/dev/null 2>&1 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $HOST_TOOLS >/dev/null 2>&1; } ||
    cannot "cannot install $HOST_TOOLS with apt-get (offline?)"
}

binfmt_entry() { echo /proc/sys/fs/binfmt_misc/qemu-aarch64; }

ensure_binfmt() {
  native && return 0
  local entry
  entry=$(binfmt_entry)
  if [ -e "$entry" ] && ! grep -qx enabled "$entry"; then
    echo 1 >"$entry" 2>/dev/null || true # registered but switched off
  elif [ ! -e "$entry" ] && command -v update-binfmts >/dev/null; then
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true # registers it; mounts binfmt_misc when it is not
  fi
  grep -qx enabled "$entry" 2>/dev/null ||
    cannot "no binfmt for aarch64: the kernel has no enabled qemu-aarch64 entry in /proc/sys/fs/binfmt_misc (a container cannot register one: do it on the host, e.g. update-binfmts --enable qemu-aarch64)"
}

# The interpreter must be reachable from inside the root unless binfmt opened it at registration (flag F).
interpreter_into_root() {
  native && return 0
  local entry interp
  entry=$(binfmt_entry)
  grep -q '^flags:.*F' "$entry" && return 0
  interp=$(sed -n 's/^interpreter //p' "$entry")
  [ -n "$interp" ] && [ -e "$interp" ] || die "binfmt names no usable interpreter for aarch64 ($entry)"
  mkdir -p "$ROOT$(dirname "$interp")" && cp -f "$interp" "$ROOT$interp"
}

mirror() {
  if [ -n "${WASTE_EDGE_ARM64_MIRROR:-}" ]; then echo "$WASTE_EDGE_ARM64_MIRROR"; return; fi
  local m=""
  if command -v apt-get >/dev/null && grep -qs '^ID=debian' /etc/os-release; then # apt's own parse of its sources
    m=$(apt-get indextargets --format '$(RELEASE) $(COMPONENT) $(IDENTIFIER) $(REPO_URI)' 2>/dev/null |
      awk -v s="$SUITE" '$1 == s && $2 == "main" && $3 == "Packages" { print $4; exit }')
  fi
  echo "${m:-http://deb.debian.org/debian/}"
}

reachable() { # URL: one line on stderr and false when it does not answer
  python3 - "$1" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=20).close()
except Exception as e:  # HTTPError (404, 403), URLError (DNS, refused), timeouts
    print(f"{type(e).__name__}: {getattr(e, 'reason', e)}", file=sys.stderr)
    sys.exit(1)
EOF
}

ensure_network() { # only needed while something is still to be downloaded
  local why
  if [ ! -e "$ROOT/.waste-edge-root" ]; then
    why=$(reachable "$(mirror)dists/$SUITE/Release" 2>&1) || cannot "no network to the Debian mirror $(mirror) ($why)"
  fi
  why=$(reachable "${INDEX%/}/numpy/" 2>&1) || cannot "no network to the package index $INDEX ($why): setup downloads the aarch64 wheels from it"
}

preflight() {
  need_root "$1"
  command -v python3 >/dev/null || cannot "needs python3 on the host"
  ensure_host_tools
  ensure_binfmt
}

# -- the root ------------------------------------------------------------------------------------------------------

# The CPU the root emulates (QEMU_CPU), with the MIDR part and the feature flags Linux shows for it. QEMU's default
# ("max") has every extension, SVE included, which no board has: a kernel that needs ARMv8.2 would run there and die
# with SIGILL on a Raspberry Pi 4 (onnxruntime 1.21.0 does exactly that, microsoft/onnxruntime#23957).
cpu_table() { # name part variant revision features
  case $1 in
    cortex-a53) echo "0xd03 0x0 4 fp asimd evtstrm crc32 cpuid" ;;                  # Raspberry Pi 3, Zero 2 W
    cortex-a57) echo "0xd07 0x1 1 fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid" ;; # Jetson Nano / TX1
    cortex-a72) echo "0xd08 0x0 3 fp asimd evtstrm crc32 cpuid" ;;                  # Raspberry Pi 4 (ARMv8.0)
    cortex-a76) echo "0xd0b 0x4 1 fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;; # Raspberry Pi 5 (ARMv8.2, dot product; a Jetson Orin's A78AE has the same)
    neoverse-n1) echo "0xd0c 0x3 1 fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs" ;;
    *) return 1 ;;
  esac
}
CPU=${WASTE_EDGE_ARM64_CPU:-cortex-a72}
cpu_table "$CPU" >/dev/null || die "WASTE_EDGE_ARM64_CPU=$CPU: one of cortex-a53 cortex-a57 cortex-a72 cortex-a76 neoverse-n1"

# Runs "$@" (argv, no shell) inside the root in a private mount namespace: every mount disappears with the process,
# whatever way it ends. `exec` all the way down, so the caller's PID is the program's (signals reach it).
in_root() {
  local cwd=/
  case "$PWD/" in "$REPO"/* | /tmp/*) cwd=$PWD ;; esac
  cp -fL /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  exec unshare --mount --propagation private -- "$BASH" "${BASH_SOURCE[0]}" __enter "$cwd" "$@"
}

# Inside the new mount namespace: what a board shows a program, then chroot. /proc/cpuinfo and the CPU lists of /sys
# describe the emulated CPU, as on a board: QEMU 7.2 passes the host's x86 /proc/cpuinfo through, onnxruntime's
# CPU detection (pytorch cpuinfo) then warns "Unknown CPU vendor", without /sys it prints "Error in cpuinfo: failed
# to parse the list of possible processors", and with the host's /sys (x86 CPUs) it crashes with SIGSEGV. None of
# that happens on a board, whose /proc and /sys describe its own ARM CPU.
enter() { # cwd argv...
  local cwd=$1 n part variant revision features i
  shift
  mount -t proc proc "$ROOT/proc"
  mount --rbind /dev "$ROOT/dev"
  mount --bind /tmp "$ROOT/tmp"
  mkdir -p "$ROOT$REPO" && mount --bind "$REPO" "$ROOT$REPO"
  n=$(nproc --all)
  read -r part variant revision features < <(cpu_table "$CPU")
  mount -t tmpfs -o size=1m,mode=755 arm64-sys "$ROOT/sys"
  mkdir -p "$ROOT/sys/devices/system/cpu"
  for f in possible present online; do echo "0-$((n - 1))" >"$ROOT/sys/devices/system/cpu/$f"; done
  for ((i = 0; i < n; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
      "$i" "$features" "$variant" "$part" "$revision"
  done >"$ROOT/sys/cpuinfo"
  mount --bind "$ROOT/sys/cpuinfo" "$ROOT/proc/cpuinfo"
  mount -o remount,ro "$ROOT/sys"
  native && unset QEMU_CPU || export QEMU_CPU=$CPU
  exec chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH="$VENV/bin:/usr/bin:/bin" PYTHONUNBUFFERED=1 \
    ${QEMU_CPU:+QEMU_CPU=$QEMU_CPU} ${OMP_NUM_THREADS:+OMP_NUM_THREADS=$OMP_NUM_THREADS} \
    /bin/sh -c 'cd "$0" 2>/dev/null || cd /; exec "$@"' "$cwd" "$@"
}

root_sh() { # a shell command inside the root, in a subshell so the caller goes on
  (in_root /bin/sh -c "$1")
}

build_root() {
  [ -e "$ROOT/.waste-edge-root" ] && return 0
  local m partial=$DIR/root.partial keyring=()
  m=$(mirror)
  [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
  rm -rf "$partial" && mkdir -p "$DIR/debs"
  # python3 only: python3-venv would pull ca-certificates, whose set-up alone costs a minute of emulated CPU; the venv
  # gets pip from its wheel instead, and pip trusts the host's CA bundle (copied in) or its own.
  say "debootstrap arm64 $SUITE from $m into $ROOT (minutes: the packages are configured under emulation)"
  # In its own mount namespace: the /proc and /sys debootstrap mounts in the new root vanish with it, even when it
  # fails half-way, so deleting a partial root never walks into a mounted file system.
  if ! unshare --mount --propagation private -- debootstrap --arch=arm64 --variant=minbase --include=python3 \
    --cache-dir="$DIR/debs" "${keyring[@]}" "$SUITE" "$partial" "$m" >"$DIR/debootstrap.log" 2>&1; then
    tail -n 5 "$DIR/debootstrap.log" >&2
    die "debootstrap failed (whole log: $DIR/debootstrap.log)"
  fi
  rm -rf "$ROOT" && mv "$partial" "$ROOT"
  date -u +%FT%TZ >"$ROOT/.waste-edge-root"
}

host_python() {
  local py
  for py in "$REPO/.venv/bin/python" python3; do
    if "$py" -m pip --version >/dev/null 2>&1; then echo "$py"; return; fi
  done
  die "needs pip on the host to build the wheel (make install, or apt-get install python3-pip)"
}

build_venv() {
  [ -x "$ROOT$VENV/bin/pip" ] && return 0
  local pipdir=$ROOT/opt/waste-edge/pip whl
  say "creating $VENV in the root (pip from its wheel)"
  rm -rf "$pipdir" && mkdir -p "$pipdir"
  "$(host_python)" -m pip download -q --no-deps --only-binary=:all: --dest "$pipdir" pip >"$DIR/pip.log" 2>&1 ||
    { tail -n 5 "$DIR/pip.log" >&2; die "could not download pip's wheel (log: $DIR/pip.log)"; }
  whl=$(cd "$pipdir" && ls pip-*.whl)
  root_sh "rm -rf $VENV && python3 -m venv --without-pip $VENV &&
    $VENV/bin/python /opt/waste-edge/pip/$whl/pip install -q --no-index --disable-pip-version-check /opt/waste-edge/pip/$whl" ||
    die "could not create the venv in the arm64 root"
}

build_wheel() { # sets WHEEL: this checkout's wheel, built on the host (pure Python: the same file for every platform)
  local wheels=$DIR/wheel
  rm -rf "$wheels" && mkdir -p "$wheels"
  say "building the waste-edge wheel on the host"
  "$(host_python)" -m pip wheel -q --no-deps --wheel-dir "$wheels" "$REPO" >"$DIR/wheel.log" 2>&1 ||
    { tail -n 5 "$DIR/wheel.log" >&2; die "the wheel did not build (log: $DIR/wheel.log)"; }
  WHEEL=$wheels/$(cd "$wheels" && ls waste_edge-*.whl)
}

deps_key() { # wheel extras: what decides the installed dependencies (the wheel's Requires-Dist and the extras asked for)
  python3 - "$@" <<'EOF'
import hashlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
requires = sorted(line for line in meta.splitlines() if line.startswith("Requires-Dist:"))
print(hashlib.sha256("\n".join(requires + ["extras: " + sys.argv[2]]).encode()).hexdigest())
EOF
}

install_wheel() { # wheel extras(comma-separated)
  local whl extras=$2 key stamp=$ROOT/opt/waste-edge/deps.sha256
  whl=$(basename "$1")
  rm -rf "$ROOT/opt/waste-edge/wheel" && mkdir -p "$ROOT/opt/waste-edge/wheel"
  cp "$1" "$ROOT/opt/waste-edge/wheel/"
  key=$(deps_key "$1" "$extras")
  if [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then # the same dependencies as last time: only the package changes
    say "reinstalling $whl (dependencies unchanged)"
    root_sh "$VENV/bin/python -m pip install -q --no-deps --force-reinstall --disable-pip-version-check /opt/waste-edge/wheel/$whl" ||
      die "pip could not reinstall $whl in the arm64 root"
    return
  fi
  ensure_network
  [ -e /etc/ssl/certs/ca-certificates.crt ] && mkdir -p "$ROOT/etc/ssl/certs" &&
    cp -f /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
  say "installing $whl${extras:+ [$extras]} and its aarch64 dependencies from $INDEX"
  # Wheels only (--only-binary): a dependency without an aarch64 wheel is an error here, not an hour-long emulated
  # build. The package itself is reinstalled every time: a changed checkout keeps the same version number.
  root_sh "export PIP_INDEX_URL='$INDEX' PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=60 \
      PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_ROOT_USER_ACTION=ignore
    [ -e \$PIP_CERT ] || unset PIP_CERT
    $VENV/bin/python -m pip install -q --only-binary=:all: '/opt/waste-edge/wheel/$whl${extras:+[$extras]}' &&
    $VENV/bin/python -m pip install -q --no-deps --force-reinstall '/opt/waste-edge/wheel/$whl'" ||
    die "pip could not install $whl${extras:+[$extras]} in the arm64 root (a dependency without an aarch64 wheel?)"
  echo "$key" >"$stamp"
}

cmd_setup() {
  local extras=() started=$SECONDS
  while [ $# -gt 0 ]; do
    case $1 in
      --extra) [ $# -ge 2 ] || usage; extras+=("$2"); shift 2 ;;
      --extra=*) extras+=("${1#--extra=}"); shift ;;
      *) usage ;;
    esac
  done
  preflight setup
  mkdir -p "$DIR"
  [ -e "$ROOT/.waste-edge-root" ] && [ -x "$ROOT$VENV/bin/pip" ] || ensure_network
  build_root
  interpreter_into_root
  build_venv
  build_wheel
  install_wheel "$WHEEL" "$(IFS=,; echo "${extras[*]}")"
  say "ready in $((SECONDS - started)) s: scripts/arm64.sh exec info"
}

require_root_built() {
  need_root "$1"
  [ -x "$ROOT$VENV/bin/waste-edge" ] || die "not set up: run scripts/arm64.sh setup first"
  native || ensure_binfmt
}

case ${1:-} in
  __enter) shift; enter "$@" ;; # internal: in_root's second half, inside the new mount namespace
  setup) shift; cmd_setup "$@" ;;
  exec) shift; require_root_built exec; in_root "$VENV/bin/waste-edge" "$@" ;;
  python) shift; require_root_built python; in_root "$VENV/bin/python" "$@" ;;
  check) preflight check; ensure_network; say "this machine can set up the arm64 root" ;;
  clean) need_root clean; rm -rf "$ROOT" "$DIR/root.partial" "$DIR/debs" "$DIR/wheel"; say "removed the root and its caches from $DIR" ;;
  *) usage ;;
esac
