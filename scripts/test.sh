#!/usr/bin/env bash
# The test command: set up .venv (first run), lint, then run the whole test suite on real data.
# RDEDGE_MVTEC_ROOT: MVTec AD root (default ../shared/data/mvtec beside the repository);
# RDEDGE_INDUSTRIAL_ROOT: the industrial sets, KolektorSDD and tire (default ../shared/data/industrial).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
source "$ROOT/scripts/system_packages.sh"
export RDEDGE_MVTEC_ROOT="${RDEDGE_MVTEC_ROOT:-$ROOT/../shared/data/mvtec}"
export RDEDGE_INDUSTRIAL_ROOT="${RDEDGE_INDUSTRIAL_ROOT:-$ROOT/../shared/data/industrial}"
ruff check .
python -m pytest "$@"
