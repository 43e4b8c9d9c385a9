# Sourced by scripts/test.sh and scripts/demo.sh: create .venv and install ppml-build into it.
#   PPML_EXTRAS: pip extras to install (e.g. "test"); empty for the tool alone.
ensure_venv() {
    if [[ ! -x .venv/bin/python ]]; then
        echo "setup: creating .venv"
        python3 -m venv .venv
    fi
    local target="."
    [[ -n "${PPML_EXTRAS:-}" ]] && target=".[${PPML_EXTRAS}]"
    echo "setup: installing ppml-build${PPML_EXTRAS:+ [$PPML_EXTRAS]} into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check -e "$target" 2>&1 \
        | grep -v -E "^WARNING: Location .* is ignored" || true
    .venv/bin/python -c "import ppml_build" \
        || { echo "setup: error: the install into .venv is incomplete" >&2; return 1; }
}
