#!/usr/bin/env bash
# The main job: set up .venv (first run), then train → export → evaluate → benchmark on ELPV mono cells (CPU).
# Extra arguments go to `rdedge demo` (see `rdedge demo --help`).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
rdedge demo "$@"
