"""Feature datasets: a built frame dataset -> a TFDS dataset of CLIP image features per second.

`python -m vlx.extract_features --builder NAME [--config C] --split S|all --data_dir D
(--clip FILE | --random_clip)` (the CLI, vlx/extract_features.py) reads the built TFDS dataset
NAME/C from D and writes, into the SAME data_dir, the dataset `NAME_clip` with config C (plus a
rate tag, e.g. `C_2fps`, at another --features_per_second; names: settings.output_names):
  - every feature of the source example except the frames (unless --frames): ids (`video_id`,
    `start`, `end`), captions, labels, QA fields, audio, ...;
  - `clip_features` float32 [N, D]: CLIP's image embedding (encode_image, not L2-normalised) of
    the stored frame nearest each t = k / features_per_second (vlx.data.features_extract.sampling;
    N = ceil(duration * features_per_second) >= 1, varies per clip);
  - `source_index` int64: the example's position in the source split (the dataset is written
    unshuffled, in source order).
Read it with `config.data.<block>.builder='NAME_clip'` and the `features` reader
(feature='clip_features', dim=D, normalize=True for the L2-normalised steps EAO uses), or
`tfds.builder_from_directory(D/NAME_clip/C/1.0.0)`.

Shards, resume after a kill, the settings fingerprint, workers and the TFDS writer are the token
datasets' (vlx.data.tokenize): D/NAME_clip.work/C/S/shard-KKKKK.npz, atomically written.
Differences from the EAO authors' extraction: frames come from the stored JPEGs (at the
builder's fps, short side 256 for video builders), not from the original video.
Modules: settings (flags -> names, fingerprint), sampling (which frames), tower (the jitted CLIP
image tower and host preprocessing), run (the driver).
"""
from vlx.data.features_extract.run import extract_split  # noqa: F401
from vlx.data.features_extract.settings import Settings, output_names  # noqa: F401
