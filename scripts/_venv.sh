# shellcheck shell=bash
# Sourced by scripts/up and scripts/test: make .venv exist and hold the project
# (re-installing when pyproject.toml changed). $1: the extras to install ("" or "dev").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LOCKGATE_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "Lockgate needs Python 3.11 or newer (found $("$PY" --version 2>&1))" >&2
  exit 1
}
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv in $VENV" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
fi
extras="${1:-}"
stamp="$VENV/.lockgate-installed-${extras:-base}"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing lockgate${extras:+[$extras]} into $VENV" >&2
  spec="$ROOT"
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
