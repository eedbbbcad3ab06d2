#!/usr/bin/env bash
# Installs Debian's chromium for the report screenshot test where it is missing.
# Without root or apt the test skips and says why.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "chromium not installed and no root/apt: the report screenshot test will skip" >&2
fi
