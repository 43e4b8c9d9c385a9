#!/usr/bin/env bash
# The README's test command: set up what the tests need on a fresh Debian machine, then run them.
#   bash scripts/test.sh [pytest args...]
# Unit tests need only the venv; integration tests (tests/integration, marker "docker") also
# need a Docker engine and a local registry, which scripts/docker-up.sh installs and starts.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/venv.sh
PPML_EXTRAS=test ensure_venv
.venv/bin/python -c "import regopy, voluptuous, kubernetes" \
    || { echo "test: error: the test dependencies are missing from .venv" >&2; exit 1; }

# Lint and format first: a minute of ruff saves a suite run on a file that would not pass.
.venv/bin/ruff check --quiet . || { echo "test: error: ruff check found problems (ruff check --fix .)" >&2; exit 1; }
.venv/bin/ruff format --check --quiet . \
    || { echo "test: error: files need formatting (ruff format .)" >&2; exit 1; }

if [[ "${PPML_SKIP_DOCKER:-0}" != 1 ]]; then
    bash scripts/docker-up.sh
fi

set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [[ $status -eq 5 ]]; then
    echo "test: error: pytest collected no tests" >&2
    exit 1
fi
exit $status
