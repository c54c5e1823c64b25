# Sourced by the scripts that build Go tools (scripts/ferretdb.sh, scripts/receive-adapter.sh, …).
# A clean checkout (CI's) has an empty .bin/, so each binary is kept outside the clone, keyed by what
# it is built from, and .bin/<name> is a copy of the cached one: a warm machine links in seconds
# instead of rebuilding for minutes.
#   VIDEO2MP3_TOOL_CACHE  where the binaries are kept (default ~/.cache/video2mp3/bin)
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
TOOL_CACHE="${VIDEO2MP3_TOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/video2mp3/bin}"

# key_of FILE… : a short hash of the files' contents, for a cache key.
key_of() { cat "$@" | sha256sum | cut -c1-12; }

# cached_build NAME KEY BUILD_FUNCTION : makes .bin/NAME. When $TOOL_CACHE/NAME-KEY is missing,
# BUILD_FUNCTION is called with the path to write the binary to, and its result is cached.
cached_build() {
  local name=$1 key=$2 build=$3
  local cached="$TOOL_CACHE/$name-$key"
  mkdir -p "$TOOL_CACHE" .bin
  if [ ! -x "$cached" ]; then
    command -v go >/dev/null || { echo "$name: Go is required to build it (see README)" >&2; return 1; }
    echo "$name: building (key $key; cached in $TOOL_CACHE)…"
    local started=$SECONDS
    "$build" "$cached.tmp.$$"
    mv "$cached.tmp.$$" "$cached"
    echo "$name: built in $((SECONDS - started)) s"
  fi
  if ! cmp -s "$cached" ".bin/$name"; then cp "$cached" ".bin/$name.tmp.$$" && mv ".bin/$name.tmp.$$" ".bin/$name"; fi
  echo "$name: .bin/$name is up to date"
}
