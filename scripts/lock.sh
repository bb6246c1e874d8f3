#!/usr/bin/env bash
# Recompile the hashed locks from requirements/*.in (runtime first: dev is constrained by it).
# The locks name packages and hashes only, never where they were downloaded from (uv writes no
# package source unless asked to).
set -euo pipefail
cd "$(dirname "$0")/../requirements"
uv=../.venv/.bootstrap/bin/uv
for name in runtime dev bootstrap; do
  "$uv" pip compile --generate-hashes --no-header "$name.in" -o "$name.txt"
done
