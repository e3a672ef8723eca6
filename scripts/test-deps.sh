#!/usr/bin/env bash
# Installs what the end-to-end tests run against: Debian packages (a real HTTP proxy) and
# npm packages (a real OAuth 2.0 server). Used by `make test`; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(tinyproxy chromium)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d tests/tools/node_modules/oauth2-mock-server ]; then
  echo "installing npm test tools"
  (cd tests/tools && npm ci --no-audit --no-fund --silent)
fi
