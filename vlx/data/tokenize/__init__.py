"""Token datasets: a built frame dataset -> a TFDS dataset of DALL-E dVAE codes per stored frame.

`python -m vlx.tokenize --builder NAME [--config C] --split S --data_dir D --encoder DIR` (the CLI,
vlx/tokenize.py) reads the built TFDS dataset NAME/C split S from D and writes, into the SAME
data_dir, the dataset `NAME_vq` with config C (names: settings.output_names):
  - every feature of the source example unchanged (ids: `video_id`, `start`, `end`; captions,
    labels, QA / multiple-choice fields, audio, ... and the encoded frames `video` unless
    `--no-frames`), so VIOLET pre-training (frames + MVM targets) and VIMPAC (tokens + labels)
    train from it directly;
  - `vq_tokens` int16 [T, g, g]: the dVAE code of every stored frame (T = the example's stored
    frames), g = `--grid` (7 = 224 / 32, VIOLET; 16 / 32 for VIMPAC's 128 / 256 px frames);
  - `source_index` int64: the example's position in the source split. Examples keep the source
    order (the dataset is written unshuffled), so example i of the token split is example i of
    the source split.
Per frame (shared/reference/violet/spec.md §1 str2img, §5.5, §9): pad to a square with zeros
(top/bottom or left/right by (long - short) // 2 each side), resize to g*8 px (bilinear,
antialiased), map_pixels, encoder, argmax. `--fit crop` instead follows VIMPAC's video2token views
(shared/reference/vimpac/spec.md §1): short side -> `--short_side`, a g*8 crop at
top / center / bottom (`--crop_at`), optional `--hflip`; a non-default view gets its own config
name (e.g. `tiny_g16_crop160top_flip`). `--fit crop --views SPEC` (views.py) writes several views
of every video into one record instead: `vq_tokens` int16 [V, T, g, g], views ordered flip-major,
then crop, then scale (e.g. `--views flip2_crop3_scale2`: 12 views), config
`<config>_g<grid>_<SPEC>` (e.g. `split1_g16_crop3`), the view list in the dataset's metadata
(`view_list`) and description.

Reading it: the pipeline's builder access (vlx.data.pipeline.get_builder, so
`config.data.train.builder='NAME_vq'`, `builder_config=C`) opens it from its directory, as does
`tfds.builder_from_directory(D/NAME_vq/C/1.0.0)`. Readers: `token_grid` (feature 'vq_tokens';
`align_with='video'` takes the tokens of exactly the frames the `video` input samples: MVM
targets) and `frames` (feature 'video').

Work is done in shards of `--shard_size` consecutive source examples; each shard's codes go to
D/NAME_vq.work/C/S/shard-KKKKK.npz, written atomically (temp file + rename). A killed run,
started again with the same command, skips the finished shards; the TFDS dataset is written at
the end from the shard files (every split whose shards are all done, so tokenizing another split
later re-packs the earlier ones from their shards without running the dVAE again). Several
machines sharing D split the shards with `--num_workers N --worker_index K`; a last run without
them writes the dataset. Differences from the references' own extraction: frames come from the
stored JPEGs (short side 256 at the builder's fps), not from the original video.
Modules: settings (flags -> names, paths, the settings fingerprint), views (--views SPEC),
frames (TF frame preprocessing), encoder (the jitted token function), shards (compute, resume),
writer (TFDS output), run (the driver). The resumable loop (run.compute_shards), the shard files
and the writer (writer.write_derived) also make vlx.data.features_extract's per-second feature
datasets.
"""
from vlx.data.tokenize.run import tokenize_split  # noqa: F401
from vlx.data.tokenize.settings import Settings, output_names  # noqa: F401
