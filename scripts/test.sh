#!/usr/bin/env bash
# The whole test suite: install, build, run every Meson test, print a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
status=0
meson test -C build --print-errorlogs --num-processes 1 "$@" || status=$?
# One closing line any reader understands: "N passed, N failed".
/usr/bin/python3 - <<'PY'
import json, pathlib
log = pathlib.Path("build/meson-logs/testlog.json")
passed = failed = skipped = 0
for line in log.read_text().splitlines():
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif r == "SKIP":
        skipped += 1
    else:
        failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
