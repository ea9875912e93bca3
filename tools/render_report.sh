#!/usr/bin/env bash
# Renders a run's HTML report to a PNG with headless Chromium (Debian's `chromium`), to look at the
# page as a reader would. Writes RUN_DIR/report.html first when it is missing.
#   tools/render_report.sh RUN_DIR OUT.png [WIDTHxHEIGHT]     (default 1400x4000)
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 RUN_DIR OUT.png [WIDTHxHEIGHT]" >&2
  exit 2
fi
run_dir=$1
out=$2
size=${3:-1400x4000}
root="$(cd "$(dirname "$0")/.." && pwd)"
moefold=${MOEFOLD:-"$root/build/bin/moefold"}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "render_report: no chromium found (Debian: apt-get install chromium)" >&2
  exit 1
fi
if [ ! -f "$run_dir/report.html" ]; then
  "$moefold" report "$run_dir" >/dev/null
fi
page="$(cd "$run_dir" && pwd)/report.html"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
# A private profile directory: no state is shared with (or left in) the user's browser profile.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --screenshot="$out_abs" --window-size="${size/x/,}" "file://$page" 2>/dev/null
echo "$out_abs"
