#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine with Python 3.11: Debian packages the tests need,
# the .venv virtualenv and the pinned, hashed Python dependencies. Safe to run any number of times.
set -euo pipefail
cd "$(dirname "$0")/.."

want_debs=(openssh-server openssh-client)
[[ "${KUBETRAIN_SETUP_CONTAINER:-0}" == 1 ]] && want_debs+=(docker.io debootstrap)
missing=()
for deb in "${want_debs[@]}"; do
  dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q 'install ok installed' || missing+=("$deb")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo_cmd=(); [[ $(id -u) == 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[[ -x .venv/bin/python ]] || "$python" -m venv .venv

# Reinstall only when the lock changed: a stamp holds the hash of what was installed.
lock=requirements/dev.txt
stamp=.venv/.kubetrain-installed
want=$(sha256sum "$lock" | cut -d' ' -f1)
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "setup: installing Python packages from $lock"
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$lock"
  echo "$want" > "$stamp"
fi
