#!/usr/bin/env bash
# Builds HAProxy 3.0.11 LTS (Debian 13's source package, Debian's patches applied) once,
# into a cache outside the clone, and prints the binary's path on stdout.
#
# Does: reuse a cached binary when `haproxy -v` reports the expected version and its
#   BUILD-INFO says which source it was built from; fetch the source with apt from a private
#   apt configuration (trixie deb-src, Debian's archive keyring), verify the original
#   tarball's sha256; when the mirror no longer serves the current Debian revision's .dsc
#   (seen: 404 for deb13u4's), fetch the pinned earlier revision (deb13u3, its .dsc checked
#   against a sha256 recorded here; dpkg-source checks the Debian tarball against the .dsc)
#   so Debian's patches (security fixes among them) are applied; build with OpenSSL, PCRE2
#   and the Prometheus exporter; serialise concurrent builds with a lock.
# Does not: touch the system's apt sources, install the binary system-wide, or build any
#   other version (the checksum pins 3.0.11).
set -euo pipefail

VERSION=3.0.11
ORIG_SHA256=a133e2d550c5fd9a849b5c7ab17bb945bcdad209ca140d41f45ebf31943ae783
# The Debian revision fetched from the pool when apt cannot get the current one's files.
PINNED_REVISION=1+deb13u3
PINNED_DSC_SHA256=11e6fc6750be89dbe61e9ab2b338254957a2724d1f2b5d0b9ea707556a9ebb1f
POOL=http://deb.debian.org/debian/pool/main/h/haproxy
CACHE_ROOT="${SCIMGATE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scimgate}"
DEST="$CACHE_ROOT/haproxy-$VERSION"
BIN="$DEST/haproxy"

log() { echo "build-haproxy-3.0: $*" >&2; }

cached_ok() {
  # Read the whole output first: with pipefail, `haproxy -v | head -n1 | grep -q` fails
  # whenever head or grep exits before haproxy finished writing (SIGPIPE), a race CI lost.
  local said
  [ -x "$BIN" ] || return 1
  said="$("$BIN" -v 2>/dev/null)" || return 1
  [[ "$said" == *"HAProxy version $VERSION"* ]] || return 1
  # A binary from before BUILD-INFO (or a half-finished build) is rebuilt once.
  [ -s "$DEST/BUILD-INFO" ]
}

if cached_ok; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock 9
if cached_ok; then  # another build finished while we waited for the lock
  echo "$BIN"
  exit 0
fi

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
need=""
for pkg in libssl-dev libpcre2-dev libc6-dev dpkg-dev make gcc debian-archive-keyring curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
  log "installing build dependencies:$need"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need >/dev/null
fi

WORK="$DEST/work"
rm -rf "$WORK"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/src"
# A private apt configuration: the machine's own sources stay untouched.
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
  >"$WORK/apt/sources.list"
APT_OPTS=(
  -o "Dir::Etc::SourceList=$WORK/apt/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$WORK/apt/lists"
  -o "Dir::Cache=$WORK/apt/cache"
  -o "APT::Sandbox::User=root"
)
log "fetching the trixie source index"
apt-get "${APT_OPTS[@]}" -qq update
log "downloading haproxy $VERSION source"
# apt checks every file it downloads against the signed Sources index. The mirror may serve
# the original tarball but no longer the Debian revision's .dsc / .debian.tar.xz (seen here:
# 404 for deb13u4's): then we build the verified upstream tarball without Debian's patches.
(cd "$WORK/src" && apt-get "${APT_OPTS[@]}" -qq source --download-only "haproxy" >/dev/null 2>"$WORK/apt-source.err") \
  || log "apt-get source was incomplete: $(grep -c "404" "$WORK/apt-source.err") file(s) not served"

orig="$WORK/src/haproxy_$VERSION.orig.tar.gz"
if [ ! -f "$orig" ]; then
  log "trixie no longer carries haproxy $VERSION: found $(ls "$WORK/src")"
  exit 1
fi
got=$(sha256sum "$orig" | cut -d' ' -f1)
if [ "$got" != "$ORIG_SHA256" ]; then
  log "checksum mismatch for $orig: $got, expected $ORIG_SHA256"
  exit 1
fi
dsc=$(ls "$WORK/src"/haproxy_"$VERSION"-*.dsc 2>/dev/null | head -n1 || true)
if [ -z "$dsc" ] || ! ls "$WORK/src"/haproxy_"$VERSION"-*.debian.tar.* >/dev/null 2>&1; then
  rm -f "$WORK/src"/haproxy_"$VERSION"-*.dsc "$WORK/src"/haproxy_"$VERSION"-*.debian.tar.*
  pinned="haproxy_${VERSION}-${PINNED_REVISION}"
  log "fetching the pinned Debian revision ${VERSION}-${PINNED_REVISION} from the pool"
  if curl -fsS -m 120 -o "$WORK/src/$pinned.dsc" "$POOL/$pinned.dsc" \
    && curl -fsS -m 120 -o "$WORK/src/$pinned.debian.tar.xz" "$POOL/$pinned.debian.tar.xz"; then
    got=$(sha256sum "$WORK/src/$pinned.dsc" | cut -d' ' -f1)
    if [ "$got" != "$PINNED_DSC_SHA256" ]; then
      log "checksum mismatch for $pinned.dsc: $got, expected $PINNED_DSC_SHA256"
      exit 1
    fi
    dsc="$WORK/src/$pinned.dsc"
  else
    dsc=""
    rm -f "$WORK/src/$pinned".*
  fi
fi
if [ -n "$dsc" ]; then
  # dpkg-source checks the orig and Debian tarballs against the .dsc's checksums (the .dsc
  # itself: apt checked it against the signed Sources index, or we against the pin above)
  # and applies Debian's patches; a failure stops the build rather than skip them silently.
  (cd "$WORK/src" && dpkg-source -x "$dsc" "haproxy-$VERSION" >"$WORK/dpkg-source.log" 2>&1) \
    || { tail -n 20 "$WORK/dpkg-source.log" >&2; exit 1; }
  built_from="debian $(basename "$dsc" .dsc) ($(grep -cv '^\(#\|$\)' "$WORK/src/haproxy-$VERSION/debian/patches/series") patches)"
  log "unpacked $(basename "$dsc") with Debian's patches"
else
  tar -xzf "$orig" -C "$WORK/src"
  built_from="upstream haproxy_$VERSION.orig.tar.gz (Debian's patches unavailable from the mirror)"
  log "unpacked the upstream tarball (Debian's patches unavailable from the mirror)"
fi
log "building (about 75 s on 2 cores)"
make -s -C "$WORK/src/haproxy-$VERSION" TARGET=linux-glibc USE_OPENSSL=1 USE_PCRE2=1 USE_PROMEX=1 \
  -j"$(nproc)" >"$WORK/build.log" 2>&1 || { tail -n 30 "$WORK/build.log" >&2; exit 1; }
install -m 0755 "$WORK/src/haproxy-$VERSION/haproxy" "$BIN.new"
rm -f "$DEST/BUILD-INFO"
mv -f "$BIN.new" "$BIN"
printf 'version: %s\nsource: %s\nbuilt: %s\n' "$VERSION" "$built_from" "$(date -u +%FT%TZ)" >"$DEST/BUILD-INFO"
rm -rf "$WORK"
cached_ok || { log "built binary does not report version $VERSION"; exit 1; }
log "built $BIN"
echo "$BIN"
