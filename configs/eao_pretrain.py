"""Everything-at-Once tri-modal pre-training (spec §6): the combinatorial NormSoftmax over text,
video and audio (weights tv 1, the other five 0.1, divided by their sum 1.5, as the reference).

Paper preset ('', options `:s3d` / `:clip` for the stronger-backbone variants): HowTo100M
features (data_builders/howto100m_features: 2D/3D features, ASR captions, spectrograms; 10 clips
per video unrolled into the batch: 224 videos x 10 clips = 2240 rows per contrastive batch), 12
video tokens, 768 audio frames (8 s), 20 words; Adam lr 5e-5 without weight decay, ExponentialLR
gamma 0.9 per epoch, 15 epochs; DAVEnet's BatchNorm in train mode (batch statistics; the running
statistics are carried out of the step). Text: word2vec (config.init.word_vectors = the output
dir of `python -m vlx.data.word2vec`, model.word_vocab_size = its rows) or, with `:clip`, the
frozen CLIP text tower (config.init.clip). Mixed precision of the reference is not reproduced
(float32). The number of HowTo100M videos per epoch below is the reference's video list
(HowTo100M_1166_videopaths.txt: about 1.166M videos); set train.num_steps /
optim.schedule.transition_steps for your copy.

`:demo` pre-trains a small model tri-modally on moving_shapes on a CPU in minutes (video: the
fixed silhouette `frame_features`, colour-free; audio: the colour tone; text: the shipped
vocabulary through a random frozen word table) and ends with retrieval evals `test_t2v` and
`test_t2va` on 100 test clips (chance R@1 = 1%); `:tiny` is for tests. Measured once (500 steps,
2 shared cores at load ~7-11, 9 min 30 s wall, 291 s CPU): t2v R@1 65, t2va R@1 93 (R@5 95 / 100):
the video features carry no colour, the audio tone does, and fusing it helps.
"""
from __future__ import annotations

import ml_collections

from configs import eao_common as ec

HOWTO100M_VIDEOS = 1_166_000        # ~ the reference's video list (see the module docstring)
PAPER = dict(videos_per_batch=224, clips_per_video=10, epochs=15, gamma=0.9, video_tokens=12,
             audio_frames=768)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  preset, variant, strategy = ec.parse(arg)
  if strategy:
    raise ValueError(f"EAO option {strategy!r} is an evaluation strategy of the fine-tuning / "
                     "zero-shot configs (configs/eao_msrvtt_ret.py, eao_youcook2_ret.py)")
  c = ec.base(preset, variant, ec.PRETRAIN_WEIGHTS)
  c.seed = 42
  c.evals = ml_collections.ConfigDict()
  if preset == "":
    steps_per_epoch = HOWTO100M_VIDEOS // PAPER["videos_per_batch"]
    c.data.update(global_batch_size=PAPER["videos_per_batch"] * PAPER["clips_per_video"],
                  tokenizer=ec.tokenizer(variant), shuffle_buffer=10_000)
    # task 'asr_clips' (vlx/data/asr_clips.py): each video unrolled into 10 ASR-aligned 8 s
    # clips, audio shifted by +4 s; the readers then take the first 12 tokens / 768 frames
    c.data.train.update(builder="howto100m_features", builder_config=ec.BUILDER_CONFIG[variant],
                        split="train", task="asr_clips",
                        max_text_len=ec.MAX_WORDS + (2 if variant == "clip" else 0),
                        clips=dict(n_clips=PAPER["clips_per_video"],
                                   video=ec.PART_RATES[variant]),
                        inputs=ec.feature_inputs(variant, PAPER["video_tokens"],
                                                 PAPER["audio_frames"]))
    c.optim.schedule.update(type="exponential", transition_steps=steps_per_epoch,
                            decay_rate=PAPER["gamma"])
    c.train.update(num_steps=PAPER["epochs"] * steps_per_epoch, log_every=100, eval_every=0,
                   ckpt_every=steps_per_epoch, keep=3)
    return c
  ec.moving_shapes_data(c, preset)
  if preset == "demo":
    # from scratch on 4000 clips: a larger lr than the paper's, decayed per "epoch" of 62 steps
    c.optim.update(lr=5e-4, grad_clip=5.0)
    c.optim.schedule.update(type="exponential", transition_steps=62, decay_rate=0.9)
    c.train.update(num_steps=500, log_every=25, eval_every=0, ckpt_every=500, keep=1)
  else:  # tiny: seconds, for tests
    c.optim.update(lr=1e-3)
    c.train.update(num_steps=2, log_every=1, eval_every=0, ckpt_every=2, keep=1)
  c.evals = ec.retrieval_evals(c, preset)
  return c


get_config = ec.with_modifiers(get_config)
