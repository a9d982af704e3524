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
cd "$(dirname "$0")/.."

force=0
[ "${1:-}" = "--force" ] && force=1

. /etc/os-release
release=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
image="nbd-conform-peers:$release"
recipe=$(sha256sum "$0" | cut -c1-16)

if [ "$force" = 0 ] && [ "$(docker image inspect -f '{{ index .Config.Labels "nbd-conform.recipe" }}' "$image" 2>/dev/null)" = "$recipe" ]; then
  echo "$image is up to date (recipe $recipe)"
  exit 0
fi

# The first mirror that apt here uses for "$release" (one-line and deb822 formats).
mirror=$(
  {
    cat /etc/apt/sources.list 2>/dev/null | awk -v r="$release" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { if ($(i + 1) == r) print $i; break } }'
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
      awk -v r="$release" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { if ($(i + 1) == r) print $i; break } }' "$f"
    done
  } | head -n 1
)
if [ -z "$mirror" ]; then
  echo "build-image: no apt source for $release in /etc/apt/sources.list{,.d}: cannot tell which mirror to use" >&2
  exit 1
fi

root=$(mktemp -d /var/tmp/nbd-conform-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "build-image: debootstrap $release from $mirror (qemu-utils nbdkit nbd-server)"
debootstrap --variant=minbase --include=qemu-utils,nbdkit,nbd-server "$release" "$root" "$mirror" \
  >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Nothing the image needs at run time: the package cache and apt lists.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change "LABEL nbd-conform.recipe=$recipe" - "$image" >/dev/null
echo "build-image: $image built (recipe $recipe)"
for tool in "qemu-nbd --version" "nbdkit --version" "nbd-server -V"; do
  docker run --rm --network none "$image" $tool 2>&1 | head -n 1
done
