#!/usr/bin/env bash
# Builds the project's ffmpeg.wasm core (vendor/ffmpeg-core/) from Debian bookworm's pinned sources
# with Debian's emscripten: zlib (PNG), LAME, and ffmpeg configured with --disable-everything and
# then only the components in tools/core/components.txt. No --enable-gpl, no --enable-nonfree: the
# result is LGPL-2.1-or-later (docs/core.md). Single-threaded: the converter runs one thread per
# instance and gets parallelism from instances (lib/media/encoder-pool.ts).
#
# Needs root's apt (a deb-src line is added if missing) and the emscripten package. Intermediate files
# go to $CORE_BUILD_DIR (default ~/.cache/video2mp3/core); finished stages are kept there, keyed by
# their inputs, so a rerun after a change to the link step only relinks. The output is checked in
# (docs/core.md says why); test/core.test.ts checks that it was built from this script's inputs.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
core="$root/tools/core"
out="${CORE_OUT:-$root/vendor/ffmpeg-core}"
work="${CORE_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/video2mp3/core}"
jobs="${CORE_JOBS:-$(nproc)}"

# Debian bookworm sources: version and the sha256 of each upstream tarball (checked before use).
FFMPEG_VERSION=7:5.1.9-0+deb12u1
FFMPEG_ORIG=ffmpeg_5.1.9.orig.tar.xz
FFMPEG_SHA256=d9b593bb2ba93d4b50f74177e0cdcd41747e708596367deed0c30348a71dd176
LAME_VERSION=3.100-6
LAME_ORIG=lame_3.100.orig.tar.gz
LAME_SHA256=ddfe36cab873794038ae2c1210557ad34857a4b6bdc515785d1da9e175b1da1e
ZLIB_VERSION=1:1.2.13.dfsg-1
ZLIB_ORIG=zlib_1.2.13.dfsg.orig.tar.bz2
ZLIB_SHA256=71feb7947e3c00ef125f83b79a4e529bde31171e5babe48b391f06758d1ab0a1
EMSCRIPTEN_VERSION=3.1.6

# Speed flags, measured in docs/performance.md: -O3 and wasm SIMD everywhere; LAME also gets its SSE
# path (compiled to wasm SIMD by emscripten's SSE headers), fast math and LTO.
SIMD=(-O3 -msimd128)
LAME_CFLAGS=("${SIMD[@]}" -msse -msse2 -DMIN_ARCH_SSE -ffast-math -flto)
ZLIB_CFLAGS=("${SIMD[@]}" -flto)
FFMPEG_CFLAGS=("${SIMD[@]}")

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'build-core: %s\n' "$*" >&2; exit 1; }

command -v emcc >/dev/null || die "emcc not found: apt-get install emscripten"
emcc_version="$(emcc --version)"
[[ "${emcc_version%%$'\n'*}" == *" $EMSCRIPTEN_VERSION "* ]] || die "emscripten $EMSCRIPTEN_VERSION expected: ${emcc_version%%$'\n'*}"
# Debian's emscripten runs its JS optimizer with the system's acorn.
export NODE_PATH=/usr/share/nodejs

mkdir -p "$work/downloads" "$work/prefix"
prefix="$work/prefix"

# A stage is redone when its key (its inputs, spelled out) changes.
stage_done() { [ -f "$work/$1.stamp" ] && [ "$(cat "$work/$1.stamp")" = "$2" ]; }
stage_mark() { printf '%s' "$2" >"$work/$1.stamp"; }

fetch_source() { # package version orig sha256
  local dir="$work/downloads"
  if [ ! -f "$dir/$3" ]; then
    if ! apt-cache showsrc "$1" >/dev/null 2>&1 || [ -z "$(apt-cache showsrc "$1" 2>/dev/null)" ]; then
      say "adding Debian's deb-src lines"
      sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >/etc/apt/sources.list.d/debian-src.sources
      apt-get update -qq
    fi
    (cd "$dir" && apt-get source --download-only "$1=$2" >/dev/null)
  fi
  echo "$4  $dir/$3" | sha256sum -c --quiet - || die "$3: checksum mismatch"
  rm -rf "$work/src-$1"
  (cd "$dir" && dpkg-source --no-check -x "$(ls "$1"_*.dsc | grep -F "_${2#*:}.dsc")" "$work/src-$1" >/dev/null)
}

# zlib: the PNG decoder (cover art) inflates with it.
key="zlib $ZLIB_VERSION ${ZLIB_CFLAGS[*]}"
if ! stage_done zlib "$key"; then
  say "zlib $ZLIB_VERSION"
  fetch_source zlib "$ZLIB_VERSION" "$ZLIB_ORIG" "$ZLIB_SHA256"
  (cd "$work/src-zlib" && CFLAGS="${ZLIB_CFLAGS[*]}" emconfigure ./configure --static --prefix="$prefix" >/dev/null \
    && emmake make -j"$jobs" libz.a >/dev/null && emmake make install >/dev/null)
  stage_mark zlib "$key"
fi

key="lame $LAME_VERSION ${LAME_CFLAGS[*]}"
if ! stage_done lame "$key"; then
  say "LAME $LAME_VERSION"
  fetch_source lame "$LAME_VERSION" "$LAME_ORIG" "$LAME_SHA256"
  (cd "$work/src-lame" && emconfigure ./configure --host=i686-linux --prefix="$prefix" --disable-shared --enable-static \
      --disable-frontend --disable-decoder --disable-gtktest --disable-analyzer-hooks --disable-dependency-tracking \
      CFLAGS="${LAME_CFLAGS[*]}" >/dev/null \
    && emmake make -j"$jobs" >/dev/null && emmake make install >/dev/null)
  stage_mark lame "$key"
fi

# ffmpeg: nothing but the listed components (tools/core/components.txt, one `kind: a, b` line each).
components=()
while IFS= read -r line; do
  line="${line%%#*}"
  [ -n "${line// /}" ] || continue
  kind="${line%%:*}"
  for name in $(echo "${line#*:}" | tr ',' ' '); do components+=("--enable-$kind=$name"); done
done <"$core/components.txt"
# ffmpeg's files are compiled by emscripten's clang with the flags emcc would add (`emcc --cflags`; the
# objects are identical) and linked by emcc: configure runs ~1000 tiny compiles, where emcc's own start
# cost most of the time.
FFMPEG_CONFIGURE=(
  --target-os=none --arch=x86_32 --enable-cross-compile
  --cc="clang-14 $(emcc --cflags)" --ld=emcc --ar=llvm-ar-14 --ranlib=llvm-ranlib-14 --nm=llvm-nm-14
  --disable-asm --disable-inline-asm --disable-x86asm --disable-runtime-cpudetect
  --disable-autodetect --disable-pthreads --disable-network --disable-doc --disable-debug --disable-stripping
  --disable-programs --enable-ffmpeg
  --disable-everything --disable-postproc
  --enable-zlib --enable-libmp3lame
)
# The tree is kept when only the component list changed: configure reruns in it and make recompiles
# what changed (config.h carries the configure line, so that is most files: ~5 min on a quiet machine).
tree_key="ffmpeg $FFMPEG_VERSION ${FFMPEG_CFLAGS[*]} ${FFMPEG_CONFIGURE[*]}"
FFMPEG_CONFIGURE+=("${components[@]}")
key="ffmpeg $FFMPEG_VERSION ${FFMPEG_CFLAGS[*]} ${FFMPEG_CONFIGURE[*]}"
FFTOOLS_OBJS=(fftools/cmdutils.o fftools/opt_common.o fftools/ffmpeg.o fftools/ffmpeg_filter.o fftools/ffmpeg_hw.o fftools/ffmpeg_mux.o fftools/ffmpeg_opt.o)
FFMPEG_LIBS=(libavdevice/libavdevice.a libavfilter/libavfilter.a libavformat/libavformat.a libavcodec/libavcodec.a libswresample/libswresample.a libswscale/libswscale.a libavutil/libavutil.a)
if ! stage_done ffmpeg "$key"; then
  say "ffmpeg $FFMPEG_VERSION"
  if ! stage_done ffmpeg-tree "$tree_key"; then
    fetch_source ffmpeg "$FFMPEG_VERSION" "$FFMPEG_ORIG" "$FFMPEG_SHA256"
    stage_mark ffmpeg-tree "$tree_key"
  fi
  (cd "$work/src-ffmpeg" && emconfigure ./configure "${FFMPEG_CONFIGURE[@]}" \
      --extra-cflags="${FFMPEG_CFLAGS[*]} -I$prefix/include" --extra-ldflags="-L$prefix/lib" --optflags="-O3" >"$work/ffmpeg-configure.log" \
    && emmake make -j"$jobs" "${FFMPEG_LIBS[@]}" "${FFTOOLS_OBJS[@]}" >"$work/ffmpeg-make.log")
  stage_mark ffmpeg "$key"
fi

# The link: a module factory (createFFmpegCore) for Node that runs main() once per instance and
# exports FS and callMain; lib/media/ffmpeg-core.ts instantiates it from one compiled module per thread.
say "link"
LINK=(
  "${SIMD[@]}" -flto
  -sMODULARIZE=1 -sEXPORT_NAME=createFFmpegCore -sENVIRONMENT=node -sINVOKE_RUN=0 -sEXIT_RUNTIME=0
  -sALLOW_MEMORY_GROWTH=1 -sINITIAL_MEMORY=33554432 -sMAXIMUM_MEMORY=2147483648 -sTOTAL_STACK=5242880
  -sWASM_BIGINT=1 -sFORCE_FILESYSTEM=1 -sEXPORTED_RUNTIME_METHODS=FS,callMain -sEXPORTED_FUNCTIONS=_main
  # An instance per run: the glue must not add process-wide handlers each time it is instantiated.
  -sNODEJS_CATCH_EXIT=0 -sNODEJS_CATCH_REJECTION=0
)
tmp="$work/link"
rm -rf "$tmp" && mkdir -p "$tmp"
(cd "$work/src-ffmpeg" && emcc "${LINK[@]}" "${FFTOOLS_OBJS[@]}" "${FFMPEG_LIBS[@]}" -L"$prefix/lib" -lmp3lame -lz -lm -o "$tmp/ffmpeg-core.js")

# What the core is and how it was made, beside it: the configure line and licence ffmpeg reports, the
# sources' versions and hashes, the inputs' hash test/core.test.ts compares with this script's.
configuration="$(grep -o 'FFMPEG_CONFIGURATION "[^"]*"' "$work/src-ffmpeg/config.h" | sed 's/^FFMPEG_CONFIGURATION "//; s/"$//')"
license="$(grep -o 'FFMPEG_LICENSE "[^"]*"' "$work/src-ffmpeg/config.h" | sed 's/^FFMPEG_LICENSE "//; s/"$//')"
case "$configuration" in *nonfree*|*enable-gpl*) die "configure line has a GPL or nonfree part: $configuration" ;; esac
mkdir -p "$out"
cp "$tmp/ffmpeg-core.js" "$tmp/ffmpeg-core.wasm" "$out/"
mkdir -p "$out/licenses"
cp "$work/src-ffmpeg/COPYING.LGPLv2.1" "$out/licenses/ffmpeg-COPYING.LGPLv2.1"
cp "$work/src-ffmpeg/LICENSE.md" "$out/licenses/ffmpeg-LICENSE.md"
cp "$work/src-lame/COPYING" "$out/licenses/lame-COPYING"
cp "$work/src-zlib/LICENSE" "$out/licenses/zlib-LICENSE" 2>/dev/null || sed -n '/Copyright/,/madler/p' "$work/src-zlib/README" >"$out/licenses/zlib-LICENSE"
# The LGPL's source offer: which sources, where they are kept, how they were built.
cat >"$out/SOURCES.md" <<EOF
# Corresponding source of this ffmpeg core

This core (ffmpeg-core.wasm, ffmpeg-core.js) is ffmpeg and LAME, licensed under the GNU Lesser General
Public License version 2.1 or later (ffmpeg) and the GNU Library General Public License version 2 or
later (LAME), with zlib under the zlib licence; the texts are in licenses/. It was built, unmodified,
from these Debian bookworm source packages (upstream tarball sha256 in brackets):

- ffmpeg $FFMPEG_VERSION [$FFMPEG_SHA256]
- lame $LAME_VERSION [$LAME_SHA256]
- zlib $ZLIB_VERSION [$ZLIB_SHA256]

with Debian's emscripten $EMSCRIPTEN_VERSION, by scripts/build-core.sh of the video2mp3 repository
(configure line in build.json). \`apt-get source ffmpeg=$FFMPEG_VERSION\` (likewise lame, zlib) fetches
them from a Debian mirror, and https://snapshot.debian.org/ keeps every version. For three years from
the date you received this image, the project's maintainers also provide these exact sources on request
(open an issue in the repository you got the image from); you may relink the core against modified
versions of these libraries with the same script.
EOF
node "$core/write-build-info.mjs" "$out/build.json" \
  ffmpeg="$FFMPEG_VERSION" ffmpegSha256="$FFMPEG_SHA256" lame="$LAME_VERSION" lameSha256="$LAME_SHA256" \
  zlib="$ZLIB_VERSION" zlibSha256="$ZLIB_SHA256" emscripten="$EMSCRIPTEN_VERSION" \
  configuration="$configuration" license="$license"
say "done: $(du -b "$out/ffmpeg-core.wasm" | cut -f1) bytes of wasm in $out ($license)"
