#!/usr/bin/env bash
# Makes sure the external programs the tests run are installed: the
# PostgreSQL server and its clients, and redis (tidepool-testkit starts
# them), and valgrind (the instruction-count gate). Silent when
# they all are; installs the missing Debian packages when run as root;
# otherwise says what to install and fails.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

have_pg_server() {
    # Debian keeps the server outside PATH, one directory per major version.
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        if [[ -x "$bin/postgres" && -x "$bin/initdb" ]]; then
            return 0
        fi
    done
    have postgres && have initdb
}

missing=()
have_pg_server || missing+=(postgresql)
{ have psql && have pg_isready; } || missing+=(postgresql-client)
have redis-server || missing+=(redis-server)
# redis-cli has a package of its own on Debian.
have redis-cli || missing+=(redis-tools)
# benches/icount.sh, the instruction-count gate the test script runs.
have valgrind || missing+=(valgrind)

if ((${#missing[@]} == 0)); then
    exit 0
fi

if ((EUID != 0)); then
    echo "ensure-deps: missing test dependencies; install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "ensure-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
