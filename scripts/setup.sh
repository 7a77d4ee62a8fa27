#!/usr/bin/env bash
# Set up everything a fresh machine needs: the virtual environment with the
# project and its test extras, HAProxy, and (with --services) PostgreSQL and
# MariaDB running with a database for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# PYTHON picks the interpreter (default python3) and with it the venv: .venv, or
# .venv-X.Y for another version (scripts/venv_dir.sh).
PY=${PYTHON:-python3}
VENV=$(scripts/venv_dir.sh)
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV ($("$PY" --version))" >&2
    "$PY" -m venv "$VENV"
fi
stamp=$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
    echo "setup: installing healthmgr[test] into $VENV" >&2
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e '.[test]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

# Octavia 19.0.0 in its own venv (always python3's, whatever PYTHON is): tests/octavia
# compare healthmgr with its code.
scripts/octavia_venv.sh

if ! command -v haproxy >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing haproxy from Debian's packages" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
    else
        echo "setup: haproxy is missing; run: sudo apt-get install haproxy" >&2
    fi
fi

# promtool checks the Prometheus alert rules in docs/prometheus/ (the tests run it).
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing promtool (Debian's prometheus package)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends prometheus >/dev/null
    else
        echo "setup: promtool is missing; run: sudo apt-get install prometheus" >&2
    fi
fi

[ "${1:-}" = "--services" ] || exit 0

PG_HOST=${HEALTHMGR_PG_HOST:-127.0.0.1}
MY_HOST=${HEALTHMGR_MYSQL_HOST:-127.0.0.1}

if ! pg_isready -q -h "$PG_HOST" -p 5432 2>/dev/null; then
    echo "setup: starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 30); do pg_isready -q -h "$PG_HOST" -p 5432 && break; sleep 1; done
fi
if pg_isready -q -h "$PG_HOST" -p 5432; then
    psql -h "$PG_HOST" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='healthmgr_test'" | grep -q 1 \
        || psql -h "$PG_HOST" -U postgres -d postgres -qc "CREATE DATABASE healthmgr_test"
else
    echo "setup: PostgreSQL is not reachable on $PG_HOST:5432" >&2
fi

if ! mariadb-admin -h "$MY_HOST" -uroot ping >/dev/null 2>&1; then
    echo "setup: starting MariaDB" >&2
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
    for _ in $(seq 30); do mariadb-admin -h "$MY_HOST" -uroot ping >/dev/null 2>&1 && break; sleep 1; done
fi
if mariadb-admin -h "$MY_HOST" -uroot ping >/dev/null 2>&1; then
    mariadb -h "$MY_HOST" -uroot -e "CREATE DATABASE IF NOT EXISTS healthmgr_test"
else
    echo "setup: MariaDB is not reachable on $MY_HOST:3306" >&2
fi

# RabbitMQ: the octavia failover driver's tests cast to a real oslo.messaging worker.
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    if command -v rabbitmq-server >/dev/null 2>&1; then
        echo "setup: starting RabbitMQ" >&2
        rabbitmq-server -detached || true
        for _ in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
    else
        echo "setup: RabbitMQ is not reachable on 127.0.0.1:5672 (tests/octavia need it)" >&2
    fi
fi
