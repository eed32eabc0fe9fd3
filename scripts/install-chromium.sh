#!/bin/sh
# Debian's Chromium for the browser tests (Playwright cannot download its own browser here).
# Installs only when /usr/bin/chromium is missing; uses sudo when not root.
set -e
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "installing Debian's chromium (for the browser tests)..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
