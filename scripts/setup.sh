#!/usr/bin/env bash
# Idempotent set-up on Debian with Python 3.11, in three levels, each a superset of the one before:
#
#   scripts/setup.sh [run]  .venv + the runtime lock (requirements/runtime.txt) + the project itself
#                           (once pyproject.toml declares [project.scripts]). No Debian package, no
#                           sudo.
#   scripts/setup.sh dev    the same with the dev lock (requirements/dev.txt): linters, type
#                           checker, test tools. Still no Debian package.
#   scripts/setup.sh test   dev + the Debian packages the tests need (sshd, the Docker engine,
#                           its registry, debootstrap, chromium); apt-get needs root or sudo.
#
# Installs use uv, pinned with its hashes in requirements/bootstrap.txt and installed by pip (the
# interpreter's, else the venv's from ensurepip) into .venv/.bootstrap; pip does the installs when
# uv cannot be had. Every step leaves a stamp in .venv holding the hash of what it installed, so a
# re-run with nothing changed costs milliseconds. KUBETRAIN_SETUP_CONTAINER=1 still means `test`.
set -euo pipefail
cd "$(dirname "$0")/.."

level=${1:-run}
[[ "${KUBETRAIN_SETUP_CONTAINER:-0}" == 1 ]] && level=test
case $level in
  run) lock=requirements/runtime.txt ;;
  dev | test) lock=requirements/dev.txt ;;
  *)
    echo "usage: $0 [run|dev|test]" >&2
    exit 2
    ;;
esac

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
stamp_ok() { [[ "$(cat "$1" 2>/dev/null)" == "$2" ]]; }

# --- Debian packages: only the tests need any. ---------------------------------------------------
if [[ $level == test ]]; then
  want_debs=(openssh-server openssh-client docker.io docker-registry debootstrap chromium)
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${want_debs[@]}" 2>/dev/null || true)
  missing=()
  for deb in "${want_debs[@]}"; do
    grep -qx "$deb install ok installed" <<<"$installed" || missing+=("$deb")
  done
  if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    sudo_cmd=()
    [[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
    # The tests start their own registry on 127.0.0.1; the package's service would listen on
    # :5000 on every interface, so it stays off where systemd runs.
    if [[ " ${missing[*]} " == *" docker-registry "* ]] && [[ -d /run/systemd/system ]]; then
      "${sudo_cmd[@]}" systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
  fi
fi

# --- The virtualenv, without pip: uv installs into it; the dev lock brings pip for the tests. ---
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $python"
  "$python" -m venv --without-pip .venv
fi

# A pip for bootstrapping: the interpreter's own, else the venv's (from ensurepip, no download).
venv_pip() {
  .venv/bin/python -m pip --version >/dev/null 2>&1 || .venv/bin/python -m ensurepip >/dev/null
  echo .venv/bin/python
}
bootstrap_python() {
  if "$python" -m pip --version >/dev/null 2>&1; then echo "$python"; else venv_pip; fi
}

# --- uv, into a bootstrap folder beside the project's packages (not among them), when something is
# to be installed at all. -------------------------------------------------------------------------
boot=.venv/.bootstrap
uv=$boot/bin/uv
uv_tried=0
ensure_uv() {
  local want
  ((uv_tried)) && return 0
  uv_tried=1
  want=$(hash_of requirements/bootstrap.txt)
  stamp_ok "$boot/.stamp" "$want" && [[ -x $uv ]] && return 0
  rm -rf "$boot"
  echo "setup: installing uv from requirements/bootstrap.txt"
  if boot_python=$(bootstrap_python) &&
    "$boot_python" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
      --no-warn-script-location --require-hashes --no-deps --target "$boot" \
      -r requirements/bootstrap.txt &&
    "$uv" --version >/dev/null 2>&1; then
    echo "$want" >"$boot/.stamp"
  else
    rm -rf "$boot"
    echo "setup: uv could not be installed; falling back to pip (slower, same hashed locks)" >&2
  fi
}
# Quiet, and never a uv configuration file from the user's machine or this folder's parents.
uv_install=("$uv" pip install --quiet --no-config --python .venv/bin/python)
pip_install=(.venv/bin/python -m pip install --quiet --disable-pip-version-check
  --root-user-action=ignore)

install_lock() {
  if [[ -x $uv ]]; then
    "${uv_install[@]}" --require-hashes --no-deps --compile-bytecode -r "$1"
  else
    venv_pip >/dev/null
    "${pip_install[@]}" --require-hashes --no-deps -r "$1"
  fi
}

# --- The hashed lock: reinstalled only when it changed. ---------------------------------------
stamp=.venv/.kubetrain-$(basename "$lock" .txt)
want=$(hash_of "$lock")
if ! stamp_ok "$stamp" "$want"; then
  ensure_uv
  echo "setup: installing Python packages from $lock"
  install_lock "$lock"
  echo "$want" >"$stamp"
fi

# --- The project itself (editable), once pyproject.toml declares console scripts. --------------
# --no-deps: the lock above is the whole environment; --no-build-isolation: the locked setuptools
# builds it, so nothing unhashed is downloaded (uv also runs --offline).
stamp=.venv/.kubetrain-project
want=$(hash_of pyproject.toml)
if ! stamp_ok "$stamp" "$want"; then
  if .venv/bin/python -c 'import sys, tomllib
sys.exit(0 if "scripts" in tomllib.load(open("pyproject.toml", "rb")).get("project", {}) else 1)'
  then
    echo "setup: installing the project (editable) into .venv"
    ensure_uv
    if [[ -x $uv ]]; then
      "${uv_install[@]}" --offline --no-deps --no-build-isolation -e .
    else
      venv_pip >/dev/null
      "${pip_install[@]}" --no-index --no-deps --no-build-isolation -e .
    fi
  fi
  echo "$want" >"$stamp"
fi
