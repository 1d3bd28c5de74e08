"""VIMPAC pre-training (spec §3): 3D block mask-then-predict over dVAE codes + the long-range
NCE loss between two clips of each video, both weight 1.

Paper (`:` small, `:large`, `:large_frame256`): HowTo100M whole videos at 2 fps
(`vlx-tfds build data_builders/howto100m --config=whole_videos`), tokenised with one centre-crop
view (`python -m vlx.tokenize --builder howto100m --config whole_videos --split train --grid 16
--fit crop --crop_at center`; 32 for frame 256), two clips of 5 frames per video with starts
drawn independently over the whole video, 5 mask blocks (6 at frame 256). AdamW (0.9, 0.98,
eps 1e-8), weight decay 0.05, linear warm-up then decay, grad clip 1, batch 1024 videos per
update. The reference accumulates 1024 over its GPUs' forward steps and takes NCE negatives from
one forward step (8 videos per GPU for small, 2 for large, 1 at frame 256): here
`train.grad_accum` micro-batches of global_batch_size / grad_accum videos (64 small, 16 large,
8 frame 256: 8 GPUs' worth) give the same negatives. Small: lr 1e-3, warm-up 0.1, 10 epochs;
large: lr 3e-4, warm-up 0.05, 90 epochs at frame 128, then 10 at frame 256 from it.

`:demo` pre-trains on moving_shapes' quantised patch colours (a dVAE stand-in) on a CPU in
minutes, logging `mlm_loss`, `nce_loss`, `mask_accuracy` (percent of masked codes predicted) and
`mask_ratio`.
"""
from __future__ import annotations

import ml_collections


from configs import vimpac_common as vc

HOWTO100M_VIDEOS = 1_166_000        # videos with narration in HowTo100M_v1.csv (your copy varies)
PAPER = {"": dict(lr=1e-3, warmup=0.1, epochs=10, micro=64),
         "large": dict(lr=3e-4, warmup=0.05, epochs=90, micro=16),
         "large_frame256": dict(lr=3e-4, warmup=0.05, epochs=10, micro=8)}
BATCH = 1024


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset, variant, _ = vc.parse(arg)
  c = vc.base(preset, variant, dict(mlm=1.0, nce=1.0))
  c.optim.update(b1=0.9, b2=0.98, weight_decay=0.05)
  c.evals = ml_collections.ConfigDict()
  m = c.model
  if preset == "":
    p = PAPER[variant]
    steps = -(-p["epochs"] * HOWTO100M_VIDEOS // BATCH)
    c.data.update(global_batch_size=BATCH, shuffle_buffer=10_000)
    c.data.train.update(builder="howto100m_vq", split="train",
                        builder_config=f"whole_videos_g{int(m.frame_size) // 8}_crop"
                                       f"{int(m.frame_size)}center",
                        inputs=ml_collections.ConfigDict(dict(
                            vq_tokens=vc.token_input(m, stride=1, clips=2))))
    c.optim.update(lr=p["lr"])
    c.optim.schedule.update(warmup_ratio=p["warmup"])
    c.train.update(num_steps=steps, grad_accum=BATCH // p["micro"], log_every=100,
                   ckpt_every=2000, keep=3)
    if variant == "large_frame256":   # continues the frame-128 run (positional tables interpolated)
      c.init.from_converted = vc.CONVERTED["large"]
    return c
  c.data.update(global_batch_size=vc.DEMO["batch"] if preset == "demo" else vc.TINY["batch"],
                shuffle_buffer=4000 if preset == "demo" else 64)
  c.data.train.update(split="train", **vc.moving_shapes_block(preset),
                      inputs=ml_collections.ConfigDict(dict(
                          vq_tokens=vc.frame_token_input(m, preset, stride=1, clips=2))))
  if preset == "demo":
    m.mask_blocks = 3          # 5 frames of 8x8 codes: ~11 % of the codes masked (measured)
    c.optim.update(lr=1e-3)
    c.train.update(num_steps=120, log_every=20, ckpt_every=120, keep=1)
  else:
    m.mask_blocks = 2
    c.optim.update(lr=1e-3)
    c.train.update(num_steps=2, log_every=1, ckpt_every=2, keep=1)
  return c



