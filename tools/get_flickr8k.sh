#!/usr/bin/env bash
# Lays out Flickr8k from two public GitHub mirrors, in the folders the original release uses:
#
#   OUT/Flicker8k_Dataset/*.jpg   8,091 photos (this copy is resized to 224x224, without
#                                 keeping the aspect ratio)
#   OUT/Flickr8k_text/            Flickr8k.token.txt, Flickr_8k.{train,dev,test}Images.txt,
#                                 readme.txt
#
# Usage: tools/get_flickr8k.sh [OUT [PHOTOS_GIT [TEXT_GIT]]]
#   OUT         output folder (default: data/flickr8k under the repository root)
#   PHOTOS_GIT  bare git dir of github:RlNZLER/Image-Text-Matching (env FLICKR8K_PHOTOS_GIT)
#   TEXT_GIT    bare git dir of github:edwardcruzcruz/Describiendo_imagenes_keras
#               (env FLICKR8K_TEXT_GIT)
#
# Getting the mirrors: the project's `fetch` tool with `github:RlNZLER/Image-Text-Matching`
# and `github:edwardcruzcruz/Describiendo_imagenes_keras` puts them under
# /work/.mirror/OWNER+NAME/repo (the defaults below); a plain `git clone --bare` of the
# two repositories works as well.
#
# Licence: the Flickr8k readme asks users of the corpus to cite M. Hodosh, P. Young and
# J. Hockenmaier (2013), "Framing Image Description as a Ranking Task: Data, Models and
# Evaluation Metrics", Journal of Artificial Intelligence Research 47, 853-899.
#
# Running it again gives the same result (the folders are rebuilt, then swapped in).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/data/flickr8k}
photos_git=${2:-${FLICKR8K_PHOTOS_GIT:-/work/.mirror/RlNZLER+Image-Text-Matching/repo}}
text_git=${3:-${FLICKR8K_TEXT_GIT:-/work/.mirror/edwardcruzcruz+Describiendo_imagenes_keras/repo}}
# The photos are read from a pinned commit; the text files from the mirror's HEAD.
photos_rev=${FLICKR8K_PHOTOS_REV:-5651b89b22dc733e6a8215b93acb5dd420ad5b41}
text_rev=${FLICKR8K_TEXT_REV:-HEAD}

for dir in "$photos_git" "$text_git"; do
  git --git-dir="$dir" rev-parse --git-dir >/dev/null 2>&1 ||
    { echo "error: $dir is not a git directory (see the top of $0)" >&2; exit 1; }
done

mkdir -p "$out"
stage=$(mktemp -d "$out/.staging.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# Photos: the tree data/images/ of the pinned commit -> Flicker8k_Dataset/ (archiving the
# tree alone never touches the mirror's large files, which may be absent).
mkdir -p "$stage/Flicker8k_Dataset"
git --git-dir="$photos_git" archive "$photos_rev:data/images" | tar -x -C "$stage/Flicker8k_Dataset"

# Text: this copy adds images of its own whose names begin with "e"; drop their lines.
mkdir -p "$stage/Flickr8k_text"
for name in Flickr8k.token.txt Flickr_8k.trainImages.txt Flickr_8k.devImages.txt \
  Flickr_8k.testImages.txt; do
  git --git-dir="$text_git" show "$text_rev:Flickr8k_text/$name" |
    { grep -v '^e' || true; } >"$stage/Flickr8k_text/$name"
done
git --git-dir="$text_git" show "$text_rev:Flickr8k_text/readme.txt" \
  >"$stage/Flickr8k_text/readme.txt"

# Swap the new folders in, replacing any earlier run's.
for name in Flicker8k_Dataset Flickr8k_text; do
  rm -rf "${out:?}/$name"
  mv "$stage/$name" "$out/$name"
done

echo "$out: $(find "$out/Flicker8k_Dataset" -name '*.jpg' | wc -l) photos," \
  "$(wc -l <"$out/Flickr8k_text/Flickr8k.token.txt") captions," \
  "split $(wc -l <"$out/Flickr8k_text/Flickr_8k.trainImages.txt")" \
  "/ $(wc -l <"$out/Flickr8k_text/Flickr_8k.devImages.txt")" \
  "/ $(wc -l <"$out/Flickr8k_text/Flickr_8k.testImages.txt") images"
