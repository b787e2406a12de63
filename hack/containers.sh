#!/usr/bin/env bash
# Makes this machine ready for the container test tier (tests/containers): podman, buildah and
# runc from Debian, a containers.conf that works here, and the base images the tier builds on.
# No registry is reachable, so every base image is made locally (debootstrap, Debian packages)
# and imported into podman's store; Dockerfiles get them through build args.
#
#   usage: hack/containers.sh           set everything up (idempotent: only what is missing)
#          hack/containers.sh --check   build nothing, install nothing: exit 1, saying on stderr
#                                       exactly what is missing, unless all is ready
#          hack/containers.sh --help
#
# Steps, each skipped when already done:
#   1. apt-get install podman buildah runc debootstrap busybox-static musl docker-registry (root;
#      `apt-get update` first). crun is not used: it fails on the hybrid cgroup layout of these
#      machines. docker-registry is the registry `clrk build --engine podman` is tested against.
#   2. /etc/containers/containers.conf, when neither it nor $CONTAINERS_CONF exists:
#      cgroup_manager "cgroupfs" and runtime "runc", and default_ulimits at the current limits
#      (nproc also at most kernel.pid_max, to which podman lowers its own): podman otherwise
#      raises RLIMIT_NOFILE/NPROC past them, which is refused here.
#   3. Base images, one rootfs tarball each under $CLRK_IMAGES_DIR (default ~/.cache/clrk-images),
#      made when the tarball is missing, imported when podman's store lacks the image:
#        localhost/clrk-base/debian:bookworm   debootstrap --variant=minbase (stands for debian:bookworm-slim)
#        localhost/clrk-base/debian:trixie     the same for trixie (Python 3.13 is in its archive)
#        localhost/clrk-base/noglibc           no glibc: Debian's busybox-static (sh, cp, cat…) and
#                                              musl's loader (stands for Alpine)
#        localhost/clrk-base/noshell           no shell, no libc: /etc/passwd, /etc/group, /tmp and
#                                              one static program, /usr/bin/cat (busybox-static under
#                                              that name: it cannot act as a shell) (distroless-like)
# Environment: CLRK_IMAGES_DIR, CLRK_DEBIAN_MIRROR (default http://deb.debian.org/debian).
# Progress goes to stderr; nothing is printed on stdout.
set -euo pipefail
cache=${CLRK_IMAGES_DIR:-$HOME/.cache/clrk-images}
mirror=${CLRK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=(podman buildah runc debootstrap busybox-static musl docker-registry)
images=(debian:bookworm debian:trixie noglibc noshell)
conf=/etc/containers/containers.conf
path_env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

say() { echo "containers.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

case "${1:-}" in
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  --check | "") ;;
  *) die "unknown argument ${1} (see --help)" ;;
esac

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
missing_packages() { for p in "${packages[@]}"; do installed "$p" || echo "$p"; done; }
image_ref() { echo "localhost/clrk-base/$1"; }
tarball() { echo "$cache/${1//:/-}.tar"; }
image_present() { podman image exists "$(image_ref "$1")" 2>/dev/null; }

# One `limit=soft:hard` entry per resource at the current limits; none for an unlimited one.
ulimit_entry() {
  local name=$1 soft=$2 hard=$3
  [ "$hard" = unlimited ] && return 0
  [ "$soft" = unlimited ] && soft=$hard
  printf '"%s=%s:%s"' "$name" "$soft" "$hard"
}

write_conf() {
  local entries=() entry
  entry=$(ulimit_entry nofile "$(ulimit -Sn)" "$(ulimit -Hn)") && [ -n "$entry" ] && entries+=("$entry")
  # podman (containers/common) first lowers its own RLIMIT_NPROC to kernel.pid_max, and a
  # container cannot be given more than podman has: no more than that either.
  local pid_max soft hard
  pid_max=$(cat /proc/sys/kernel/pid_max)
  soft=$(ulimit -Su) hard=$(ulimit -Hu)
  if [ "$hard" = unlimited ] || [ "$hard" -gt "$pid_max" ]; then hard=$pid_max; fi
  if [ "$soft" = unlimited ] || [ "$soft" -gt "$hard" ]; then soft=$hard; fi
  entries+=("$(ulimit_entry nproc "$soft" "$hard")")
  local joined
  joined=$(IFS=,; echo "${entries[*]}")
  mkdir -p "$(dirname "$conf")"
  cat >"$conf.tmp" <<EOF
# Written by clrk's hack/containers.sh. podman's defaults fail on this machine: no systemd
# (cgroupfs), crun fails on its hybrid cgroup layout (runc), and raising RLIMIT_NOFILE/NPROC
# past the current hard limits is refused (default_ulimits: those limits when this was written,
# nproc at most kernel.pid_max, to which podman lowers its own limit before starting anything).
[containers]
default_ulimits = [${joined//,/, }]

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
EOF
  mv "$conf.tmp" "$conf"
}

# Rootfs makers: each fills the empty folder $1.
make_debian() {
  local suite=$1 dir=$2 log="$cache/debootstrap-$1.log"
  if ! debootstrap --variant=minbase "$suite" "$dir" "$mirror" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "debootstrap $suite failed (whole log: $log)"
  fi
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb "$dir"/var/log/* "$dir"/tmp/*
}

base_etc() {
  local dir=$1
  mkdir -p "$dir/etc" "$dir/tmp" "$dir/root"
  chmod 1777 "$dir/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
}

make_noglibc() {
  local dir=$1 musl loader
  base_etc "$dir"
  mkdir -p "$dir/bin" "$dir/lib"
  cp /bin/busybox "$dir/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/bin/$applet"
  done
  musl=$(dpkg -L musl | grep '/libc\.so$' | head -n 1)
  loader=$(basename "$(dpkg -L musl | grep '/ld-musl-.*\.so\.1$' | head -n 1)")
  [ -n "$musl" ] && [ -n "$loader" ] || die "the musl package has no libc.so or ld-musl loader"
  cp -L "$musl" "$dir/lib/$loader"
  if find "$dir" -name 'libc.so.6' -o -name 'ld-linux*' | grep -q .; then die "glibc found in the noglibc rootfs"; fi
}

make_noshell() {
  local dir=$1
  base_etc "$dir"
  mkdir -p "$dir/usr/bin"
  cp /bin/busybox "$dir/usr/bin/cat"
}

rootfs_tarball() {
  local name=$1 out tmp
  out=$(tarball "$name")
  tmp=$(mktemp -d "$cache/rootfs.XXXXXX")
  mkdir "$tmp/root"
  case "$name" in
    debian:*) make_debian "${name#debian:}" "$tmp/root" ;;
    noglibc) make_noglibc "$tmp/root" ;;
    noshell) make_noshell "$tmp/root" ;;
  esac
  tar --numeric-owner -C "$tmp/root" -cf "$out.tmp" .
  rm -rf "$tmp"
  mv "$out.tmp" "$out"
}

import_image() {
  local name=$1 cmd
  case "$name" in
    debian:*) cmd='CMD ["bash"]' ;;
    noglibc) cmd='CMD ["sh"]' ;;
    noshell) cmd='CMD ["/usr/bin/cat"]' ;;
  esac
  podman import --quiet --change "ENV $path_env" --change "$cmd" "$(tarball "$name")" "$(image_ref "$name")" >/dev/null
}

if [ "${1:-}" = --check ]; then
  problems=()
  missing=$(missing_packages | tr '\n' ' ')
  [ -z "$missing" ] || problems+=("Debian packages not installed: ${missing% }")
  if command -v podman >/dev/null; then
    for name in "${images[@]}"; do image_present "$name" || problems+=("image $(image_ref "$name") is not in podman's store"); done
    if image_present noshell; then
      probe=$(podman run --rm --network none "$(image_ref noshell)" /usr/bin/cat /etc/group 2>&1) ||
        problems+=("podman cannot run a container here: ${probe//$'\n'/ } (see $conf)")
    fi
  fi
  if [ ${#problems[@]} -gt 0 ]; then
    for p in "${problems[@]}"; do say "$p"; done
    say "run hack/containers.sh (as root) to set them up"
    exit 1
  fi
  exit 0
fi

missing=$(missing_packages | tr '\n' ' ')
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || die "not root: install these Debian packages yourself: ${missing% }"
  say "installing ${missing% } (apt-get)"
  log=$(mktemp)
  # shellcheck disable=SC2086 # one word per package
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "apt-get could not install ${missing% }"
  fi
  rm -f "$log"
fi

if [ -n "${CONTAINERS_CONF:-}" ]; then
  say "CONTAINERS_CONF=$CONTAINERS_CONF is set: leaving podman's configuration alone"
elif [ -e "$conf" ]; then
  say "$conf exists: leaving it alone"
else
  say "writing $conf (cgroupfs, runc, ulimits at the current hard limits)"
  write_conf
fi

mkdir -p "$cache"
for name in "${images[@]}"; do
  if [ ! -s "$(tarball "$name")" ]; then
    say "making the rootfs of $(image_ref "$name") ($(tarball "$name"))"
    start=$SECONDS
    rootfs_tarball "$name"
    say "  done in $((SECONDS - start)) s"
  fi
  if ! image_present "$name"; then
    say "importing $(image_ref "$name")"
    import_image "$name"
  fi
done
say "ready: podman $(podman version --format '{{.Client.Version}}'), base images ${images[*]/#/localhost/clrk-base/}"
