"""msrvtt_features: MSR-VTT as the EAO authors' released feature pickles (no videos).

The release (everything_at_once README, `data.tar`) unpacks to data/msrvtt/<backbone>/ with
msrvtt_train.pkl (training videos, all their captions in 'caption') and
msrvtt_jsfusion_test.pkl (JSFusion's 1k-A test: 968 of the 1000 videos, one caption in
'eval_caption'); each a list of dicts with 'id', the video features and 'audio' (log-mel
[40, n]). The resnet/ pickles hold '2d' (ResNet-152, 2048-d, 1/s) and '3d' (ResNeXt-101,
2048-d, 1.5/s) plus captions and audio; s3d/ ('s3d', 1024-d) and clip/ ('clip', 512-d) pickles
are aligned item by item with them. Splits: train, test_1ka (complete size 1000: the 32 absent
videos count as misses, info.metadata['complete_size']['test_1ka']). Configs: resnet (default,
features_2d + features_3d), s3d (features_3d only), clip (features_2d only).
See vlx.data.feature_pickles for the stored features.
"""
from __future__ import annotations

from etils import epath

from vlx.data import feature_pickles as fp

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download data.tar (features and spectrograms of MSR-VTT and YouCook2) from the link in
https://github.com/ninatu/everything_at_once#get-started and extract it (tar -xvf data.tar).
manual_dir is the extracted data/ folder (or the folder holding it, or data/msrvtt/):
  manual_dir/msrvtt/resnet/msrvtt_train.pkl, msrvtt_jsfusion_test.pkl
  manual_dir/msrvtt/s3d/..., manual_dir/msrvtt/clip/...   (only for the s3d / clip configs)
The pickles are found by name under manual_dir (5 folder levels) inside a folder named after
their backbone; the resnet ones may also lie flat in manual_dir. A split whose pickle is absent
is not built (a warning says so). Pickles are read without running pickled code.
"""


class Builder(fp.FeaturePickleBuilder):
  """MSR-VTT feature pickles of the EAO release (manual download)."""

  code_path = epath.Path(__file__)
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  HOMEPAGE = "https://github.com/ninatu/everything_at_once"
  SPLIT_FILES = {"train": "msrvtt_train.pkl", "test_1ka": "msrvtt_jsfusion_test.pkl"}
  COMPLETE_SIZE = {"test_1ka": 1000}
  BUILDER_CONFIGS = [
      fp.FeaturePickleConfig(name="resnet", description="ResNet-152 2D + ResNeXt-101 3D "
                             "features (2048 + 2048), audio, captions."),
      fp.FeaturePickleConfig(name="s3d", source_2d="", source_3d="s3d", key_3d="s3d",
                             dim_3d=1024, description="S3D features (1024), audio, captions."),
      fp.FeaturePickleConfig(name="clip", source_2d="clip", key_2d="clip", dim_2d=512,
                             source_3d="", description="CLIP ViT-B/32 features (512), audio, "
                             "captions."),
  ]

  def captions(self, item: dict, split: str) -> list[str]:
    """Training: every caption ('caption', the reference picks one at random); test: the one
    evaluation caption ('eval_caption')."""
    return fp.caption_list(item, "eval_caption" if split.startswith("test") else "caption")
