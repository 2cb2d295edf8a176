#!/usr/bin/env bash
# Fetch and unpack LibriTTS or LibriTTS-R splits from openslr.org (stage -1; needs internet).
#   local/download.sh DIR LibriTTS_R|LibriTTS SPLIT...
# Each split is skipped when DIR/<corpus>/<split> exists; archives are removed once unpacked.
# Not exercised by the tests (no network there): check the URLs if openslr moves them.
set -euo pipefail
dir=$1; corpus=$2; shift 2
case "$corpus" in
  LibriTTS_R) base=https://www.openslr.org/resources/141 ;;  # names with underscores: train_clean_100
  LibriTTS) base=https://www.openslr.org/resources/60 ;;     # names with dashes: train-clean-100
  *) echo "$0: unknown corpus $corpus (LibriTTS_R or LibriTTS)" >&2; exit 1 ;;
esac
mkdir -p "$dir"
for split in "$@"; do
  if [ -d "$dir/$corpus/$split" ]; then echo "have $dir/$corpus/$split"; continue; fi
  name=$split
  [ "$corpus" = LibriTTS_R ] && name=${split//-/_}
  wget -c -O "$dir/$name.tar.gz" "$base/$name.tar.gz"
  tar -xzf "$dir/$name.tar.gz" -C "$dir"
  rm "$dir/$name.tar.gz"
done
