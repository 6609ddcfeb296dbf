#!/usr/bin/env bash
# Put CIFAR-10 where the device call of benchmarks/gpu_cifar.py reads it: .gpu_data/cifar10/ in this checkout
# (ignored through .git/info/exclude, sent with the call by `carry: [".gpu_data"]`, 19.4 MB: the two JPEG tarballs
# of the shared data, checked against the sha256 sums of its README). Run from anywhere in the checkout:
#
#   bash benchmarks/gpu_cifar_prepare.sh [FOLDER]   # FOLDER holds cifar10_{train,test}_jpg.tar.gz
#                                                   # (default: $CONTRASPHERE_DATA/cifar10, else ../shared/data/cifar10)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-${CONTRASPHERE_DATA:-../shared/data}/cifar10}
DEST=.gpu_data/cifar10
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")" "$DEST"
grep -qx '/.gpu_data/' "$EXCLUDE" 2>/dev/null || echo /.gpu_data/ >>"$EXCLUDE"
declare -A SHA256=(
  [cifar10_train_jpg.tar.gz]=45a63b9dd7542b37404b94f3e6f0269562f89fe2ff16ed505e6a327bb8c68449
  [cifar10_test_jpg.tar.gz]=f225cabdd5279430dd56749e356119671fe0cd2bf543e78d20c27af441d80951
)
for name in "${!SHA256[@]}"; do
  if [ ! -f "$DEST/$name" ] || ! cmp -s "$SRC/$name" "$DEST/$name"; then
    install -m 0644 "$SRC/$name" "$DEST/$name"
  fi
  echo "${SHA256[$name]}  $DEST/$name" | sha256sum -c --quiet - || { echo "checksum mismatch: $DEST/$name" >&2; exit 1; }
done
if git check-ignore -q "$DEST/cifar10_train_jpg.tar.gz"; then
  echo "ok: $(du -sh .gpu_data | cut -f1) in .gpu_data/ (ignored by git; name it in carry)"
else
  echo "warning: .gpu_data/ is not ignored by git" >&2
fi
