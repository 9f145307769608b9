#!/usr/bin/env bash
# Runs schemathesis with every check over every operation of a running Portcullis.
#
#   contract/schemathesis.sh BASE_URL TOKEN [extra st arguments…]
#
# BASE_URL is the server (e.g. http://127.0.0.1:8080), TOKEN an API key or a user's
# access token. Schemathesis is installed, at the versions pinned in requirements.lock,
# into a virtual environment under target/ on first use (PyPI only; nothing else is
# downloaded). PORTCULLIS_CONTRACT_EXAMPLES sets the examples per operation (default 10),
# PORTCULLIS_CONTRACT_SEED the seed (default: fixed, so that CI runs are repeatable).
# One worker: schemathesis' regex compilation is not thread-safe on every Python. The
# `filter_too_much` health check is about the generator's speed on strict patterns (the
# email address), not about the API.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
base_url="${1:?usage: schemathesis.sh BASE_URL TOKEN}"
token="${2:?usage: schemathesis.sh BASE_URL TOKEN}"
shift 2

venv="${CARGO_TARGET_DIR:-$here/../target}/schemathesis-venv"
stamp="$venv/.requirements.lock"
if ! cmp -s "$here/requirements.lock" "$stamp" 2>/dev/null; then
    # One installer at a time: the suite runs both backends at once.
    exec 9>"${venv}.lock"
    flock 9
    if ! cmp -s "$here/requirements.lock" "$stamp" 2>/dev/null; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
            -r "$here/requirements.lock"
        cp "$here/requirements.lock" "$stamp"
    fi
    flock -u 9
fi

exec "$venv/bin/st" --config-file "$here/schemathesis.toml" run "$base_url/openapi.json" \
    --url "$base_url" \
    --checks all \
    --header "Authorization: Bearer $token" \
    --max-examples "${PORTCULLIS_CONTRACT_EXAMPLES:-10}" \
    --seed "${PORTCULLIS_CONTRACT_SEED:-20261203}" \
    --no-color \
    --workers 1 \
    --suppress-health-check filter_too_much \
    "$@"
