"""Conceptual Captions 3M (Sharma et al. 2018): image-alt-text pairs, stored as 1-frame videos so
image-text pre-training (ALPRO's and All-in-one's WebVid + CC3M mix) reads them like clips.

The release is two TSVs of (caption, url); images are fetched by the user with img2dataset, which
names row i (0-based, after the header) <i // 10000 as %05d>/<i as %09d>.jpg with default shards.
"""
from __future__ import annotations

import json
import os
from typing import Iterator

from etils import epath

from vlx.data import builder_base as bb
from vlx.data import release_layout as rl

TSVS = {"train": ("Train_GCC-training.tsv", "GCC-training.tsv"),
        "validation": ("Validation_GCC-1.1.0-Validation.tsv", "GCC-1.1.0-Validation.tsv")}
IMAGE_DIRS = {"train": ("training", "train", "cc3m_train"),
              "validation": ("validation", "val", "cc3m_val", "cc3m_validation")}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
SAMPLES_PER_SHARD = 10000  # img2dataset's default --number_sample_per_shard
_PROBE = 200

MANUAL_DOWNLOAD_INSTRUCTIONS = """
1. From https://ai.google.com/research/ConceptualCaptions/download download
   Train_GCC-training.tsv and Validation_GCC-1.1.0-Validation.tsv (caption<TAB>url, no header).
2. Give each a header (img2dataset needs it; the builder accepts both):
     sed -i '1s/^/caption\\turl\\n/' Train_GCC-training.tsv
     sed -i '1s/^/caption\\turl\\n/' Validation_GCC-1.1.0-Validation.tsv
3. Download the images with img2dataset (pip install img2dataset), one folder per split:
     img2dataset --url_list Train_GCC-training.tsv --input_format tsv --url_col url \\
       --caption_col caption --output_format files --output_folder MANUAL_DIR/training \\
       --image_size 256 --resize_mode keep_ratio --resize_only_if_bigger True \\
       --processes_count 16 --thread_count 64
     (same with Validation_GCC-1.1.0-Validation.tsv -> MANUAL_DIR/validation)
   With --output_format webdataset, untar the shards in place first:
     cd MANUAL_DIR/training && for t in *.tar; do mkdir -p ${t%.tar}; tar -xf $t -C ${t%.tar}; done
Layout:
  MANUAL_DIR/
    Train_GCC-training.tsv
    Validation_GCC-1.1.0-Validation.tsv
    training/00000/000000000.jpg (+ .txt, .json)  ...  training/00331/003318332.jpg
    validation/00000/000000000.jpg ...
The TSVs and image folders may also sit one folder down (e.g. cc3m/); a split whose TSV is absent
is not built. Images are matched to TSV rows by img2dataset's key (row index); with a non-default
--number_sample_per_shard they are matched by the url in the .json files. ~15-30% of the URLs are
dead: the build reports how many annotated images it found.
"""


def read_tsv(path: str) -> list[tuple[int, str, str]]:
  """(line, caption, url) rows; a 'caption<TAB>url' header line (img2dataset's) is skipped."""
  rows = []
  for line, row in bb.read_csv(path, ["caption", "url"], delimiter="\t",
                               fieldnames=["caption", "url"]):
    if line == 1 and row["caption"].strip() == "caption" and row["url"].strip() == "url":
      continue
    rows.append((line, row["caption"].strip(), row["url"].strip()))
  return rows


def key_path(image_dir: str, index: int) -> str:
  """Where img2dataset (default shards) puts row `index`: <shard %05d>/<index %09d>.jpg."""
  return os.path.join(image_dir, f"{index // SAMPLES_PER_SHARD:05d}", f"{index:09d}.jpg")


def url_index(image_dir: str) -> dict[str, str]:
  """{url: image path} from img2dataset's <key>.json sidecars."""
  index = {}
  for folder, _, files in os.walk(image_dir):
    names = set(files)
    for f in files:
      if not f.endswith(".json"):
        continue
      stem = f[:-5]
      image = next((stem + e for e in IMAGE_EXTENSIONS if stem + e in names), None)
      if image is None:
        continue
      try:
        with open(os.path.join(folder, f)) as fh:
          url = json.load(fh).get("url")
      except (OSError, ValueError):
        continue
      if url:
        index[url] = os.path.join(folder, image)
  return index


def _sidecar_url(image_path: str) -> str | None:
  try:
    with open(os.path.splitext(image_path)[0] + ".json") as f:
      return json.load(f).get("url")
  except (OSError, ValueError):
    return None


def locate_images(image_dir: str, rows: list[tuple[int, str, str]]) -> list[str]:
  """Image path per row (existing or, for the report, where it would be)."""
  paths = [key_path(image_dir, i) for i in range(len(rows))]
  probe = range(min(_PROBE, len(rows)))
  hits = [i for i in probe if os.path.exists(paths[i])]
  urls_agree = all(_sidecar_url(paths[i]) in (None, rows[i][2]) for i in hits)
  if hits and urls_agree:
    return paths
  if not hits and os.path.isdir(image_dir) and any(
      f.endswith(".tar") for f in os.listdir(image_dir)):
    raise bb.DatasetLayoutError(f"cc3m: {image_dir} holds webdataset .tar shards: untar them in "
                                "place first (see MANUAL_DOWNLOAD_INSTRUCTIONS)")
  index = url_index(image_dir)
  return [index.get(url, paths[i]) for i, (_, _, url) in enumerate(rows)]


def records(tsv: str, image_dir: str) -> Iterator[bb.VideoRecord]:
  """One record per TSV row, keyed by the row index (img2dataset's key)."""
  rows = read_tsv(tsv)
  for i, ((_, caption, _), path) in enumerate(zip(rows, locate_images(image_dir, rows))):
    key = f"{i:09d}"
    yield bb.VideoRecord(key=key, video_path=path, fields=dict(video_id=key, captions=[caption]))


class Builder(bb.VideoDatasetBuilder):
  """CC3M images with captions as 1-frame videos (see MANUAL_DOWNLOAD_INSTRUCTIONS)."""

  code_path = epath.Path(__file__)
  IS_IMAGE = True  # rows are images: the pipeline adds is_image and uses data.train.image_augment
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://ai.google.com/research/ConceptualCaptions/"
  CITATION = ("@inproceedings{sharma2018conceptual, title={Conceptual Captions: A Cleaned, "
              "Hypernymed, Image Alt-text Dataset For Automatic Image Captioning}, author="
              "{Sharma, Piyush and Ding, Nan and Goodman, Sebastian and Soricut, Radu}, "
              "booktitle={ACL}, year={2018}}")
  BUILDER_CONFIGS = [
      bb.VideoBuilderConfig(name="default", fps=1.0, short_side=256,
                            description="Images resized to short side 256, 1 frame each."),
      bb.VideoBuilderConfig(name="short224", fps=1.0, short_side=224,
                            description="Images resized to short side 224 (ViT/224 models)."),
  ]

  def _features(self):
    return bb.caption_features()

  def _split_records(self, manual_dir: str):
    # Two levels, image folders listed but not entered (3M images + sidecars).
    image_dirs = [d for names in IMAGE_DIRS.values() for d in names]
    lay = bb.Layout(manual_dir, f"cc3m/{self.builder_config.name}", index_videos=False,
                    max_depth=2, skip=image_dirs)
    splits: dict[str, object] = {}
    for split, names in TSVS.items():
      tsv = lay.find(names, ("",))
      if tsv is None:
        splits[split] = rl.Missing((names[0],))
        continue
      image_dir = (lay.find_dir(IMAGE_DIRS[split], ("", os.path.dirname(
          os.path.relpath(tsv, lay.root)))) or os.path.join(manual_dir, IMAGE_DIRS[split][0]))
      splits[split] = records(tsv, image_dir)   # read when the split is built
    return splits
