#!/usr/bin/env bash
# Build the terminal's Debian package: dist/posfleet-agent_<version>_<arch>.deb (what `./dev package` runs).
#
#   packaging/build-agent-deb.sh [amd64|arm64 ...]      (default: amd64 arm64)
#
# The package carries a ready virtualenv at /opt/posfleet-agent made here, not at install time
# (docs/decisions/017-terminal-package.md): bin/python3 -> /usr/bin/python3.11 (Debian 12's), pyvenv.cfg, and
# lib/python3.11/site-packages filled by `pip install --target --platform manylinux_2_x_<cpu> --only-binary=:all:`
# from PyPI wheels for that CPU, so an arm64 package is built on an amd64 machine without running arm64 code.
# Bytecode is compiled here (it does not depend on the CPU) with Debian's python3.11, unchecked-hash, so the
# read-only /opt (ProtectSystem=strict) never makes the agent recompile at start, and dpkg owns every file.
# Needs: python3.11 (Debian 12's), dpkg-deb, and PyPI (or PIP_INDEX_URL / PIP_FIND_LINKS) for the wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
PY=${PY:-$ROOT_DIR/.venv/bin/python}        # runs pip (any Python 3.11+ with pip)
TARGET_PY=/usr/bin/python3.11                # the terminal's interpreter, also used here to compile bytecode
PYVER=3.11
GLIBC_MAX=36                                 # Debian 12's glibc 2.36: newest manylinux tag accepted
OUT=${OUT:-$ROOT_DIR/dist}
PREFIX=/opt/posfleet-agent

[ -x "$TARGET_PY" ] || { echo "build-agent-deb: $TARGET_PY is missing (apt-get install python3.11)" >&2; exit 2; }
command -v dpkg-deb >/dev/null || { echo "build-agent-deb: dpkg-deb is missing" >&2; exit 2; }
[ -x "$PY" ] || PY=python3

VERSION=$("$TARGET_PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
ARCHES=("$@"); [ ${#ARCHES[@]} -gt 0 ] || ARCHES=(amd64 arm64)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/posfleet-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

# the project's own wheel (pure Python), from this tree
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/wheel" . >/dev/null 2>&1 \
  || "$PY" -m pip wheel -q --no-deps -w "$WORK/wheel" .
WHEEL=$(ls "$WORK"/wheel/posfleet-"$VERSION"-*.whl)

for ARCH in "${ARCHES[@]}"; do
  case "$ARCH" in
    amd64) CPU=x86_64 ;;
    arm64) CPU=aarch64 ;;
    *) echo "build-agent-deb: unknown architecture $ARCH (amd64 or arm64)" >&2; exit 2 ;;
  esac
  PKG="$WORK/$ARCH"
  RT="$PKG$PREFIX"
  SP="$RT/lib/python$PYVER/site-packages"
  mkdir -p "$SP" "$RT/bin"

  platforms=(--platform "manylinux2014_$CPU")
  for minor in $(seq 17 $GLIBC_MAX); do platforms+=(--platform "manylinux_2_${minor}_$CPU"); done
  # the agent's dependencies only: no [server] extras; wheels only, for that CPU and CPython 3.11
  PIP_NO_WARN_SCRIPT_LOCATION=1 "$PY" -m pip install -q --no-compile --disable-pip-version-check --target "$SP" \
    --implementation cp --python-version "$PYVER" --abi "cp${PYVER/./}" "${platforms[@]}" \
    --only-binary=:all: "$WHEEL"

  # What a terminal does not run: the fleet server, the simulator, the CA (posfleet hides their commands when
  # the package is absent), console scripts made for the build machine, the wheels' own test suites.
  rm -rf "$SP"/server "$SP"/simulator "$SP"/pki "$SP"/counting "$SP"/bin "$SP"/psutil/tests
  find "$SP" -name '__pycache__' -prune -exec rm -rf {} +
  find "$SP" -name 'RECORD' -path '*.dist-info/*' -delete   # lists files this layout moved or removed

  # Debug symbols out of the wheels' extension modules (cryptography's Rust module: 14.8 -> 11.9 MB on amd64), as
  # dh_strip would; GNU strip reads only the build machine's CPU, llvm-strip any.
  strip_cmd=""
  if [ "$ARCH" = "$(dpkg --print-architecture)" ] && command -v strip >/dev/null; then strip_cmd=strip
  elif command -v "$CPU-linux-gnu-strip" >/dev/null; then strip_cmd="$CPU-linux-gnu-strip"
  elif command -v llvm-strip >/dev/null; then strip_cmd=llvm-strip
  fi
  if [ -n "$strip_cmd" ]; then
    find "$SP" -name '*.so' -exec "$strip_cmd" --strip-unneeded {} +
  else
    echo "build-agent-deb: no strip for $CPU (binutils-$CPU-linux-gnu or llvm): $ARCH extension modules left unstripped" >&2
  fi

  # a virtualenv over Debian's python3.11 (what `python3 -m venv` writes, minus pip)
  ln -s "$TARGET_PY" "$RT/bin/python3"
  ln -s python3 "$RT/bin/python"
  ln -s lib "$RT/lib64"
  printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\n' "$PYVER" > "$RT/pyvenv.cfg"
  cat > "$RT/bin/posfleet" <<PYEOF
#!$PREFIX/bin/python3
import sys

from posfleet.cli import main

if __name__ == "__main__":
    sys.argv[0] = "posfleet"
    sys.exit(main())
PYEOF
  chmod 0755 "$RT/bin/posfleet"

  # bytecode for the target interpreter, recorded with the installed paths
  "$TARGET_PY" -m compileall -q -j 0 --invalidation-mode unchecked-hash -s "$PKG" -p / "$SP" >/dev/null

  # the system side: unit, user, folders, polkit rule, example configuration, docs, posfleet on PATH
  install -D -m 0644 deploy/posfleet-agent.service "$PKG/lib/systemd/system/posfleet-agent.service"
  install -D -m 0644 packaging/agent/posfleet-agent.sysusers "$PKG/usr/lib/sysusers.d/posfleet-agent.conf"
  install -D -m 0644 packaging/agent/posfleet-agent.tmpfiles "$PKG/usr/lib/tmpfiles.d/posfleet-agent.conf"
  install -D -m 0644 packaging/agent/50-posfleet-agent.rules "$PKG/usr/share/polkit-1/rules.d/50-posfleet-agent.rules"
  install -D -m 0644 deploy/agent.example.toml "$PKG/usr/share/posfleet-agent/agent.example.toml"
  install -D -m 0644 packaging/agent/copyright "$PKG/usr/share/doc/posfleet-agent/copyright"
  install -D -m 0644 packaging/agent/README "$PKG/usr/share/doc/posfleet-agent/README"
  mkdir -p "$PKG/usr/bin"
  ln -s "$PREFIX/bin/posfleet" "$PKG/usr/bin/posfleet"

  find "$PKG" -type d -exec chmod 0755 {} +
  find "$PKG" -type f ! -perm -u+x -exec chmod 0644 {} +

  mkdir -p "$PKG/DEBIAN"
  install -m 0755 packaging/agent/postinst packaging/agent/prerm packaging/agent/postrm "$PKG/DEBIAN/"
  SIZE_KB=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
  sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE_KB/" packaging/agent/control.in > "$PKG/DEBIAN/control"
  (cd "$PKG" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$PKG/DEBIAN/md5sums"

  DEB="$OUT/posfleet-agent_${VERSION}_${ARCH}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$PKG" "$DEB" >/dev/null
  echo "$DEB  $(( $(stat -c %s "$DEB") / 1024 )) KiB, installed ${SIZE_KB} KiB"
done
