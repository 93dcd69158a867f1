# Sourced by the other scripts: create .venv on first use and install rdedge with its extras into it.
# Re-installs only when setup.py changes. Works on a fresh clone; needs python3 (3.10+) and pip access.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RDEDGE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[rdedge] creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.rdedge-installed"
WANT="$(sha256sum "$ROOT/setup.py" | cut -d' ' -f1)-${RDEDGE_EXTRAS:-dev}"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[rdedge] installing rdedge[${RDEDGE_EXTRAS:-dev}] (PyTorch and friends; a few minutes the first time)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[${RDEDGE_EXTRAS:-dev}]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
