"""All-in-one vs the reference fixtures (../shared/reference/allinone/tiny and tiny/distilled):
the core forward outputs through `python -m vlx.convert.parity` (main + distilled, sizes read
from config.json), and the model's heads on the main fixture. Losses/gradients: objectives tests."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from vlx.convert import parity
from vlx.models.allinone import load_fixture as lf

pytestmark = pytest.mark.torch   # reads the reference .ckpt files

FIXTURES = {"main": "tiny", "distilled": "tiny/distilled"}


@pytest.fixture(scope="module")
def cli_runs(reference_dir, tmp_path_factory, fast_jit):
  """`python -m vlx.convert.parity --family allinone --compare` (in process) on both fixtures,
  core outputs only (the objectives hook is switched off; its keys are dropped from the
  reference): {name: (exit code, printed table, outputs, reference)}."""
  runs = {}
  tmp = tmp_path_factory.mktemp("aio_parity")
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(lf, "_objectives_hook", lambda: None)
    mp.setattr(lf, "core_outputs", fast_jit(lf.core_outputs_fn))
    for name, sub in FIXTURES.items():
      d = reference_dir / "allinone" / sub
      with np.load(d / "outputs.npz") as z:
        ref = {k: z[k] for k in z.files if k in CORE_KEYS(z.files)}
      np.savez(tmp / f"{name}_ref.npz", **ref)
      out = tmp / f"{name}_out.npz"
      import io, contextlib  # noqa: E401 - capture the printed table
      buf = io.StringIO()
      with contextlib.redirect_stdout(buf):
        code = parity.main(["--family", "allinone", "--fixture", str(d), "--out", str(out),
                            "--compare", str(tmp / f"{name}_ref.npz")])
      runs[name] = (code, buf.getvalue(), dict(np.load(out)), ref)
  return runs


def CORE_KEYS(files) -> list[str]:  # pylint: disable=invalid-name
  """The keys load_fixture computes itself (README 'outputs.npz' rows up to ident_*)."""
  core = {"text_embeds", "image_embeds", "image_masks", "final_norm_per_frame", "final_seq",
          "text_feats", "image_feats", "cls_feats", "raw_cls_feats", "text_masks_out",
          "image_masks_out"}
  return [k for k in files if k in core or k.startswith(("roll_", "block_", "ident_"))]


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_core_outputs_match_reference(cli_runs, name):
  code, table, ours, ref = cli_runs[name]
  assert code == 0, table[-3000:]
  print(f"\n{name}\n{table}")
  assert len(ref) == 26 and f"{len(ref)} of {len(ref)} outputs pass" in table
  for key, want in ref.items():       # the README tolerance, checked here too
    atol, rtol = (0, 0) if key in ("image_masks", "image_masks_out", "text_masks_out") else (
        1e-4, 1e-4)
    np.testing.assert_allclose(ours[key], want, atol=atol, rtol=rtol, err_msg=key)
  # the permuted and the raster pass differ (the permutation really is applied)
  assert np.abs(ours["image_feats"] - ours["ident_image_feats"]).max() > 1e-3


def test_distilled_sizes_come_from_config_json(reference_dir, cli_runs):
  main = json.loads((reference_dir / "allinone/tiny/config.json").read_text())
  dist = json.loads((reference_dir / "allinone/tiny/distilled/config.json").read_text())
  c, s = lf.model_config_from_fixture(main), lf.model_config_from_fixture(dist)
  assert (c.hidden_size, c.num_heads, c.distilled, c.deit, c.shared_embedding_dim) == (
      64, 2, False, False, 32)
  assert (c.heads.num_qa_labels, c.heads.vcop, c.heads.mc_vqa, c.heads.itc) == (21, True, True,
                                                                                 True)
  assert (s.hidden_size, s.num_heads, s.distilled, s.deit, s.shared_embedding_dim) == (
      48, 3, True, True, 24)
  assert (s.heads.num_qa_labels, s.heads.vcop, s.heads.mlm) == (0, False, True)
  assert cli_runs["distilled"][2]["image_feats"].shape == (2, 18, 48)
  bad = json.loads(json.dumps(main))
  bad["hidden_size"] = 32
  with pytest.raises(ValueError, match="hidden_size=32 differs from the ViT width 64"):
    lf.model_config_from_fixture(bad)
  del bad["_fixture_vit_kwargs"]
  with pytest.raises(ValueError, match="vit='vit_fixture_p8_32' is not a released factory"):
    lf.model_config_from_fixture(bad)
  del main["num_frames"]
  with pytest.raises(KeyError, match="num_frames"):
    lf.model_config_from_fixture(main)
  released = dict(dist, vit="vit_deit_small_distilled_patch16_224", hidden_size=384)
  del released["_fixture_vit_kwargs"]
  r = lf.model_config_from_fixture(released)
  assert (r.hidden_size, r.num_heads, r.num_layers, r.img_size, r.distilled) == (
      384, 6, 12, 224, True)


def _heads(m, x):
  """The reference's head outputs from the model API alone (no objectives code)."""
  video, perm = x["video"], x["video_patch_perm"]
  mlm = m.infer(x["text_ids_mlm"], x["text_masks"], video, patch_perm=perm)
  itm = m.infer(x["text_ids"], x["text_masks"], x["itm_video"],
                patch_perm=x["itm_video_patch_perm"])
  joint = m.infer(x["text_ids"], x["text_masks"], video, patch_perm=perm)
  frames = joint["final_norm_per_frame"][:, :, 0]
  order = jax.numpy.take_along_axis(frames, x["vcop_orders"][..., None], axis=1)
  return dict(
      mlm_logits=m.mlm_score(mlm["text_feats"]), itm_logits=m.itm_score(itm["cls_feats"]),
      itm_text_feats=itm["text_feats"], itm_rank=m.rank_output(itm["cls_feats"]),
      qa_logits=m.vqa_classifier(joint["cls_feats"]), vcop_logits=m.vcop_head(order),
      itc_text_feats=m.infer_text_only(x["text_ids"], x["text_masks"])["text_feats"],
      itc_video_feats=m.infer_video_only(video, patch_perm=perm)["image_feats"])


def test_heads_match_reference(reference_dir, fast_jit):
  d = reference_dir / "allinone" / "tiny"
  cfg, x, sd = lf.read_fixture(d)
  model = lf.build_from_fixture(cfg, sd)
  with jax.default_matmul_precision("highest"):
    got = fast_jit(_heads)(model, lf.model_inputs(x))
  ref = np.load(d / "outputs.npz")
  for key in got:
    want = ref["itm_logits"][:, 1:] if key == "itm_rank" else ref[key]
    np.testing.assert_allclose(got[key], want, atol=1e-4, rtol=1e-4, err_msg=key)


def test_family_runner_and_tolerances():
  from vlx.models import allinone
  fn, family = parity.family_runner("allinone")
  assert fn is allinone.FAMILY.fixture_outputs and family is allinone.FAMILY
  table = parity.tolerances(family)
  t = lambda k: parity.tolerance(k, table)
  assert t("image_masks_out") == (0.0, 0.0) and t("grad_itc_norms") == (1e-6, 1e-3)
  assert t("grad_itc_names") == (0.0, 0.0)
  assert t("itm_wpa_loss") == (1e-6, 1e-5) and t("block_1_out") == (1e-4, 1e-4)
