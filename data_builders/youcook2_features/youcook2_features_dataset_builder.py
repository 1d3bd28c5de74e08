"""youcook2_features: YouCook2 as the EAO authors' released feature pickles (no videos).

The release (everything_at_once README, `data.tar`) unpacks to data/youcook/<backbone>/ with
youcook_train.pkl and youcook_val.pkl: lists of per-clip dicts with 'id', 'caption' (one
string), 'audio' (log-mel [40, n]) and, in resnet/, '2d_full' (ResNet-152, 2048-d, 1/s) and
'3d_full' (ResNeXt-101, 2048-d, 1.5/s); s3d/ ('s3d', 1024-d) and clip/ ('clip', 512-d) pickles
are aligned item by item with the resnet ones. As the reference, only items whose resnet entry
has '2d_full' are used (the others are reported as missing), in every config. Splits: train,
validation (complete size 3350: the absent clips count as misses,
info.metadata['complete_size']['validation']). Configs: resnet (default, features_2d +
features_3d), s3d (features_3d only), clip (features_2d only).
See vlx.data.feature_pickles for the stored features.
"""
from __future__ import annotations

from etils import epath

from vlx.data import feature_pickles as fp

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download data.tar (features and spectrograms of MSR-VTT and YouCook2) from the link in
https://github.com/ninatu/everything_at_once#get-started and extract it (tar -xvf data.tar).
manual_dir is the extracted data/ folder (or the folder holding it, or data/youcook/):
  manual_dir/youcook/resnet/youcook_train.pkl, youcook_val.pkl
  manual_dir/youcook/s3d/..., manual_dir/youcook/clip/...   (only for the s3d / clip configs)
The pickles are found by name under manual_dir (5 folder levels) inside a folder named after
their backbone; the resnet ones may also lie flat in manual_dir. A split whose pickle is absent
is not built (a warning says so). Pickles are read without running pickled code.
"""

FILTER_KEY = "2d_full"


class Builder(fp.FeaturePickleBuilder):
  """YouCook2 feature pickles of the EAO release (manual download)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://github.com/ninatu/everything_at_once"
  SPLIT_FILES = {"train": "youcook_train.pkl", "validation": "youcook_val.pkl"}
  COMPLETE_SIZE = {"validation": 3350}
  BUILDER_CONFIGS = [
      fp.FeaturePickleConfig(name="resnet", key_2d="2d_full", key_3d="3d_full",
                             description="ResNet-152 2D + ResNeXt-101 3D features "
                             "(2048 + 2048), audio, captions."),
      fp.FeaturePickleConfig(name="s3d", source_2d="", source_3d="s3d", key_3d="s3d",
                             dim_3d=1024, description="S3D features (1024), audio, captions."),
      fp.FeaturePickleConfig(name="clip", source_2d="clip", key_2d="clip", dim_2d=512,
                             source_3d="", description="CLIP ViT-B/32 features (512), audio, "
                             "captions."),
  ]

  def keep(self, item: dict) -> bool:
    return isinstance(item, dict) and FILTER_KEY in item

  def captions(self, item: dict, split: str) -> list[str]:
    return fp.caption_list(item, "caption")
