#!/usr/bin/env bash
# System packages the test suite needs (Debian): a real terminal for the monitor
# test, strace for I/O-error and slow-disk injection, fuse3 (fusermount3 and
# libfuse 3, which the mfusepy binding loads) for the power-loss file system,
# the PostgreSQL and RabbitMQ servers
# the plugins' conformance suites run against, and chromium with its
# chromedriver for the dashboard's browser tests (Selenium drives this system
# browser; nothing is downloaded at test time). Python packages are installed
# by nox into its own virtualenvs.
set -euo pipefail
need=()
command -v tmux >/dev/null || need+=(tmux)
command -v strace >/dev/null || need+=(strace)
command -v fusermount3 >/dev/null || need+=(fuse3)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v rabbitmq-server >/dev/null || need+=(rabbitmq-server)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install these Debian packages first (needs root): ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
python3 -m pip install --quiet --upgrade pip nox
