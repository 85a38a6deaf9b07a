#!/usr/bin/env bash
# Fetches the SVG styles of the emoji set from the npm registry, at pinned versions checked
# against the registry's sha512 integrity, into $ARD_DATA (default ~/.cache/ard-studio):
#   twemoji-svg-15.0.0/package/*.svg   (@twemoji/svg 15.0.0: Twemoji graphics, CC-BY 4.0)
#   openmoji-17.0.0/package/           (openmoji 17.0.0, CC BY-SA 4.0; with --openmoji only)
# Prints the folders to pass to `ard dataset emoji --twemoji` (and --openmoji).
set -euo pipefail
DATA=${ARD_DATA:-$HOME/.cache/ard-studio}
mkdir -p "$DATA"

fetch() { # name version sha512-integrity
  local dir="$DATA/$(basename "$1")-$2"
  [ "$1" = "@twemoji/svg" ] && dir="$DATA/twemoji-svg-$2"
  if [ ! -d "$dir/package" ]; then
    local tmp; tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$1@$2" >/dev/null)
    local tgz; tgz=$(ls "$tmp"/*.tgz)
    local got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
    [ "$got" = "$3" ] || { echo "$1@$2: integrity $got, expected $3" >&2; exit 1; }
    mkdir -p "$dir.partial" && tar -xzf "$tgz" -C "$dir.partial" && mv "$dir.partial" "$dir"
    rm -rf "$tmp"
  fi
  echo "$dir/package"
}

fetch @twemoji/svg 15.0.0 \
  'sha512-ZSPef2B6nBaYnfgdTbAy4jgW95o7pi2xPGwGCU+WMTxo7J6B1lMPTWwSq/wTuiMq+N0khQ90CcvYp1wFoQpo/w=='
if [ "${1:-}" = "--openmoji" ]; then
  fetch openmoji 17.0.0 \
    'sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w=='
fi
