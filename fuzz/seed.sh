#!/bin/sh
# Copies seed inputs from the shared corpus (read in place) into fuzz/corpus/<target>/,
# which is git-ignored. Usage: sh seed.sh PATH/TO/shared/corpus
set -eu
C=${1:?usage: sh seed.sh PATH/TO/shared/corpus}
cd "$(dirname "$0")"
mkdir -p corpus/tar_index corpus/descriptor corpus/manifest corpus/certificate corpus/disk corpus/package corpus/settings
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in $(find "$C" -name '*.ova' -size -300k); do
  cp "$f" corpus/tar_index/
  cp "$f" corpus/package/
  d="$tmp/$(basename "$f" .ova)"
  mkdir -p "$d"
  tar xf "$f" -C "$d" 2>/dev/null || true
done
head -c 65536 "$C/govmomi/ttylinux-pc_i486-16.1.ova" > corpus/tar_index/ttylinux-head.ova
for f in $(find "$C" -name '*.ovf' -size -64k) $(find "$tmp" -name '*.ovf'); do
  cp "$f" "corpus/descriptor/$(echo "$f" | tr / _)"
done
# settings: [selector u16 LE][value length u16 LE][value][descriptor], value "2\n"; the
# last selector (0x8000) is a mkdir of networks/2.
n=0
for f in $(find "$C" -name '*.ovf' -size -64k) $(find "$tmp" -name '*.ovf'); do
  for sel in '\000\000' '\001\000' '\003\000' '\007\000' '\017\000' '\000\200'; do
    { printf "$sel"'\002\0002\n'; cat "$f"; } > "corpus/settings/seed$n"
    n=$((n + 1))
  done
done
for f in $(find "$C" "$tmp" -name '*.mf'); do cp "$f" "corpus/manifest/$(echo "$f" | tr / _)"; done
for f in $(find "$tmp" -name '*.cert'); do cp "$f" corpus/certificate/; done
for f in "$C/cot/input.vmdk" "$C/cot/ubuntu.2.0-disk1.vmdk" "$C/dfvfs/ext2.vmdk" \
  "$C/ganeti/new_disk.vmdk" "$C/qemu/afl9.vmdk" "$C/qemu/iotest-version3.vmdk" \
  $(find "$tmp" -name '*.vmdk' -size -300k); do
  cp "$f" corpus/disk/
done
if command -v qemu-img >/dev/null; then
  head -c 20000 /dev/urandom > "$tmp/r.raw"
  truncate -s 256K "$tmp/r.raw"
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$tmp/r.raw" corpus/disk/so.vmdk
  qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$tmp/r.raw" corpus/disk/ms.vmdk
  qemu-img create -q -f vmdk corpus/disk/empty.vmdk 4M
fi
head -c 4096 /dev/zero > corpus/disk/raw4k.img
