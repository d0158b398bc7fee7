#!/usr/bin/env bash
# Headless Chromium for the dashboard test (tests/core/test_dashboard.py): Debian's `chromium`,
# and one font so that its screenshots show text.
# Idempotent: does nothing when /usr/bin/chromium is already there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "[browser] installing chromium (apt)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version >&2
