"""ALPRO pre-training (VTC + VTM + MLM [+ PEM]).

Default: the paper's setting (spec §9: WebVid2M + CC3M, TimeSformer-B/16 + BERT-base, 4 frames at
224², AdamW(0.9, 0.98) lr 1e-4, 5% linear warm-up then linear decay, clip 20, batch 16x16 GPUs, 10 epochs).
`:demo` runs the same code on the embedded moving_shapes data on a CPU in minutes; `:tiny` is for tests.
"""
from __future__ import annotations

import ml_collections

from configs import common


def alpro_model(preset: str) -> ml_collections.ConfigDict:
  """ALPRO architecture block; released sizes by default."""
  m = ml_collections.ConfigDict(dict(
      family="alpro", dtype="float32", param_dtype="float32", remat=False,
      head="pretrain",  # pretrain | prompter | retrieval | qa
      embed_dim=256, temp_init=0.07, num_entities=1000, num_labels=0, pem=False,
      video=ml_collections.ConfigDict(dict(
          img_size=224, patch_size=16, num_frames=4, width=768, depth=12, num_heads=12,
          mlp_ratio=4, ln_eps=1e-6, drop_path_rate=0.1, num_classes=400)),
      text=ml_collections.ConfigDict(dict(
          vocab_size=30522, hidden_size=768, num_layers=12, fusion_layer=6, num_heads=12,
          intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
          ln_eps=1e-12, dropout=0.1, attn_dropout=0.1)),
  ))
  if preset == "demo":
    m.video.update(img_size=32, patch_size=8, num_frames=4, width=128, depth=2, num_heads=4,
                   drop_path_rate=0.0)
    m.text.update(vocab_size=128, hidden_size=128, num_layers=4, fusion_layer=2, num_heads=4,
                  intermediate_size=256, max_position_embeddings=32, dropout=0.0,
                  attn_dropout=0.0)
    m.embed_dim = 64
    m.num_entities = 16
  elif preset == "tiny":
    m.video.update(img_size=32, patch_size=16, num_frames=2, width=32, depth=1, num_heads=2,
                   drop_path_rate=0.0)
    m.text.update(vocab_size=128, hidden_size=32, num_layers=2, fusion_layer=1, num_heads=2,
                  intermediate_size=64, max_position_embeddings=32)
    m.embed_dim = 16
    m.num_entities = 16
  return m
