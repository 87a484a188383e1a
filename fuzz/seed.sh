#!/bin/sh
# Copies seed inputs from the shared corpus (read in place) into fuzz/corpus/<target>/,
# which is git-ignored. Usage: sh seed.sh PATH/TO/shared/corpus
set -eu
C=${1:?usage: sh seed.sh PATH/TO/shared/corpus}
cd "$(dirname "$0")"
mkdir -p corpus/tar_index corpus/descriptor corpus/manifest corpus/certificate corpus/disk corpus/package corpus/settings corpus/guest_ext4
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
# partition_table: [flags u8][extra zero sectors u32 LE][bytes]; the tables' own sectors of
# 1 MiB disks made by sgdisk and sfdisk, the rest claimed as zero sectors, flag 1 (reseal).
mkdir -p corpus/partition_table
PATH="$PATH:/usr/sbin:/sbin"
if command -v sgdisk >/dev/null && command -v sfdisk >/dev/null; then
  truncate -s 1M "$tmp/g.img"
  sgdisk -a 1 -n 1:34:+100K -c 1:boot -n 2:0:+300K -t 2:8200 -n 4:0:0 -t 4:0700 "$tmp/g.img" >/dev/null
  # 34 sectors kept (MBR, header, array); 2014 claimed: the backup is zeros (refused).
  { printf '\001\336\007\000\000'; head -c 17408 "$tmp/g.img"; } > corpus/partition_table/gpt
  # The whole disk: both copies present.
  { printf '\001\000\000\000\000'; cat "$tmp/g.img"; } > corpus/partition_table/gpt-whole
  truncate -s 1M "$tmp/m.img"
  printf 'label: dos\nunit: sectors\nstart=4, size=60, type=83\nstart=64, size=1900, type=5\nstart=66, size=100, type=82\nstart=200, size=100, type=7\nstart=302, size=50, type=c\n' |
    sfdisk -q --no-reread --no-tell-kernel "$tmp/m.img" >/dev/null 2>&1 || true
  # The MBR and EBRs lie in the first 352 sectors; 1696 more claimed.
  { printf '\000\240\006\000\000'; head -c 180224 "$tmp/m.img"; } > corpus/partition_table/mbr
fi
# guest_ext4: small images made by mke2fs from a tiny tree (a file, a hard link, fast and
# slow links, a directory), with and without checksums, ext2 with block maps.
if command -v mkfs.ext4 >/dev/null || [ -x /usr/sbin/mkfs.ext4 ]; then
  PATH=$PATH:/usr/sbin:/sbin
  mkdir -p corpus/guest_ext4 "$tmp/e4/d"
  echo hello > "$tmp/e4/f"; ln "$tmp/e4/f" "$tmp/e4/d/h"; ln -s f "$tmp/e4/fast"
  ln -s "$(printf '%0100d' 0)" "$tmp/e4/slow"; head -c 20000 /dev/urandom > "$tmp/e4/d/big"
  mkfs.ext4 -q -F -b 1024 -N 32 -O ^has_journal -d "$tmp/e4" corpus/guest_ext4/csum.img 256K
  mkfs.ext4 -q -F -b 1024 -N 32 -O ^has_journal,^metadata_csum -d "$tmp/e4" corpus/guest_ext4/plain.img 256K
  mkfs.ext2 -q -F -b 1024 -N 32 -d "$tmp/e4" corpus/guest_ext4/ext2.img 256K
  mkfs.ext4 -q -F -b 1024 -N 32 -I 256 -O ^has_journal,inline_data -d "$tmp/e4" corpus/guest_ext4/inline.img 256K
fi
