"""JAX's persistent compilation cache, on by default: a repeated or resumed run loads its compiled
steps from disk instead of compiling them again (the ALPRO base step takes about a minute to
compile on CPU).

Folder: the `path` given, else `$VLX_COMPILATION_CACHE`, else `~/.cache/vlx/jax_compilation_cache`;
'off' or '' turns it off. Every process of a multi-process job may point at the same folder: JAX
writes entries from process 0 only and every process reads them. Entries are keyed by the HLO,
compile options, devices and jax/jaxlib version, so a changed program never loads a stale binary.
"""
from __future__ import annotations

import logging as std_logging
import os

from absl import logging

ENV = "VLX_COMPILATION_CACHE"
DEFAULT = "~/.cache/vlx/jax_compilation_cache"
OFF = ("off", "")


def resolve(path: str | None) -> str | None:
  """The cache folder for `path` (None: the environment variable, then the default), or None when
  the cache is off."""
  if path is None:
    path = os.environ.get(ENV, DEFAULT)
  if path.strip().lower() in OFF:
    return None
  return os.path.abspath(os.path.expanduser(path))


def enable(path: str | None, min_compile_time_s: float = 1.0,
           min_entry_size_bytes: int = 0) -> str | None:
  """Turns on the persistent compilation cache in `resolve(path)` and returns that folder, or
  returns None and leaves JAX's config unchanged when it is off.

  Only compiles slower than `min_compile_time_s` are written (tiny jits are faster to compile than
  to read back). `min_entry_size_bytes` follows JAX: 0 lets JAX pick a minimum suited to the file
  system (0 locally, larger on cloud buckets), -1 means no minimum. A folder that cannot be created
  only disables the cache (with a warning): training does not depend on it.
  """
  folder = resolve(path)
  if folder is None:
    return None
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    logging.warning("compilation cache off: cannot create %s (%s)", folder, e.strerror or e)
    return None
  # pylint: disable=import-outside-toplevel (vlx.main imports jax after jax.distributed.initialize)
  import jax
  from jax.experimental.compilation_cache import compilation_cache
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
  # JAX decides once per process whether a cache exists (at the first compile); start over so a
  # folder set after an earlier compile (or a changed folder) takes effect (quietly: JAX logs it).
  jax_log = std_logging.getLogger("jax._src.compilation_cache")
  level = jax_log.level
  jax_log.setLevel(max(level, std_logging.WARNING))
  try:
    compilation_cache.reset_cache()
  finally:
    jax_log.setLevel(level)
  logging.info("persistent compilation cache: %s (turn off with --compilation_cache=off or %s=off)",
               folder, ENV)
  return folder
