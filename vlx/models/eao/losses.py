"""Everything-at-Once training objectives in the family-contract form (spec §5).

Objective names are the combinatorial loss's pairs: tv, ta, va, t_va, v_ta, a_tv. Each active
pair returns its (unweighted) NormSoftmax loss over the rows where its modalities are non-empty;
`vlx.steps.weighted_loss` then applies `config.objectives` and sums. The reference divides the
weighted sum by Σ weights (1.5 in pre-training), so a config reproduces its loss scale with the
weights already divided (pre-training: tv 1/1.5, the other five 0.1/1.5; fine-tuning: 1/6 each).

`train=True` runs DAVEnet's BatchNorm on batch statistics (the reference's pre-training, model in
train mode; running statistics are updated in the model); fine-tuning configs of the reference
keep eval mode (`use_eval_mode_always`), i.e. train=False: a config's `model.bn_train` (False
in fine-tuning) decides, the step's `train` flag applies only where it is True. The model is called
through `inputs.model_inputs` (pipeline batch keys -> model inputs).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vlx.models.eao import inputs
from vlx.objectives.norm_softmax import PAIRS, combinatorial_loss

OBJECTIVES = tuple(p[0] for p in PAIRS)
TEMPERATURE = 0.05


def objectives(model, batch: dict, *, active: frozenset, rng: jax.Array | None = None,
               train: bool = False, temperature: float = TEMPERATURE
               ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """({pair: loss} for the active pairs, metrics: fraction of non-empty rows per modality)."""
  del rng   # no randomness: dropout and drop-path are 0 in every released config
  unknown = sorted(set(active) - set(OBJECTIVES))
  if unknown:
    raise ValueError(f"unknown Everything-at-Once objectives {unknown}; expected {OBJECTIVES}")
  out = model(inputs.model_inputs(model, batch),
              train=train and bool(getattr(model, "bn_train", True)))
  nonempty = {m: out[f"{m}_nonempty_input_mask"] for m in ("text", "video", "audio")
              if f"{m}_nonempty_input_mask" in out}
  weights = {name: 1.0 for name in active}
  losses = combinatorial_loss(out, nonempty, weights, temperature=temperature)
  losses.pop("total")
  metrics = {f"{m}_nonempty": jnp.mean(v.astype(jnp.float32)) for m, v in nonempty.items()}
  return {k: losses[k] for k in OBJECTIVES if k in losses}, metrics
