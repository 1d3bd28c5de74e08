"""vlx: video-language pre-training systems in JAX/Flax NNX.

Variables carry *logical* axis names as metadata only; `vlx.sharding` maps them to mesh axes when
state is placed. Flax's eager variable sharding would require a mesh at construction time (tests,
converters and `nnx.eval_shape` build models without one), so it is switched off here, once.
"""
import flax

flax.config.update("flax_always_shard_variable", False)

__version__ = "0.1.0"
