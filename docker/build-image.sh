#!/usr/bin/env bash
# Builds the container image the harness runs peers in (`nbd-conform run --in-container`), from
# nothing and without a registry: debootstrap a Debian root with qemu-utils, nbdkit and
# nbd-server, then `docker import` it.
#
#   docker/build-image.sh [--force]
#
# The package mirror is the one this machine's apt already uses (read from
# /etc/apt/sources.list and /etc/apt/sources.list.d/, for this machine's Debian release); it is
# never written into the repository. The image is tagged nbd-conform-peers:<release> and
# labelled with a hash of this script: an image built by this very script is reused, anything
# else is rebuilt. Needs root (debootstrap), debootstrap and docker.
set -euo pipefail
script=$(readlink -f "$0")
cd "$(dirname "$script")/.."

force=0
[ "${1:-}" = "--force" ] && force=1

. /etc/os-release
release=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
image="nbd-conform-peers:$release"
recipe=$(sha256sum "$script" | cut -c1-16)

if [ "$force" = 0 ] && [ "$(docker image inspect -f '{{ index .Config.Labels "nbd-conform.recipe" }}' "$image" 2>/dev/null)" = "$recipe" ]; then
  echo "$image is up to date (recipe $recipe)"
  exit 0
fi

# The first mirror that apt here uses for "$release" (one-line and deb822 formats). One-line
# entries may carry options in brackets, spaces included: `deb [arch=amd64 signed-by=…] URI
# SUITE …`. A `mirror+file:` URI names a file listing mirrors: its first one is taken.
one_line_sources() { # FILE...
  awk -v r="$release" '$1 == "deb" {
      i = 2
      if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
      if ($(i + 1) == r) print $i
    }' "$@" 2>/dev/null || true
}
mirror=$(
  {
    one_line_sources /etc/apt/sources.list
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -e "$f" ] || continue
      awk -v r="$release" '
        /^[[:space:]]*$/ { if (deb && suite && uri) print uri; deb = suite = 0; uri = ""; next }
        /^Types:/ { deb = ($0 ~ /(^|[[:space:]])deb([[:space:]]|$)/) }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == r) suite = 1 }
        END { if (deb && suite && uri) print uri }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.list; do
      [ -e "$f" ] || continue
      one_line_sources "$f"
    done
  } | sed -n 1p
)
case "$mirror" in
  mirror+file:*)
    list=${mirror#mirror+file:}
    mirror=$(grep -E '^(https?|ftp)://' "$list" 2>/dev/null | sed -n '1s/[[:space:]].*//p')
    ;;
esac
if [ -z "$mirror" ]; then
  echo "build-image: no apt source for $release in /etc/apt/sources.list{,.d}: cannot tell which mirror to use" >&2
  exit 1
fi

root=$(mktemp -d /var/tmp/nbd-conform-rootfs.XXXXXX)
# --one-file-system: never into a /proc or /dev that a failed debootstrap left mounted.
trap 'rm -rf --one-file-system "$root"' EXIT
echo "build-image: debootstrap $release from $mirror (qemu-utils nbdkit nbd-server)"
debootstrap --variant=minbase --include=qemu-utils,nbdkit,nbd-server "$release" "$root" "$mirror" \
  >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Nothing the image needs at run time: the package cache and apt lists.
rm -rf --one-file-system "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change "LABEL nbd-conform.recipe=$recipe" - "$image" >/dev/null
echo "build-image: $image built (recipe $recipe)"
for tool in "qemu-nbd --version" "nbdkit --version" "nbd-server -V"; do
  docker run --rm --network none "$image" $tool 2>&1 | sed -n 1p
done
