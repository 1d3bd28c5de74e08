"""vlx.compile_cache: the folder it resolves, entries written by a jit, 'off' leaves JAX alone."""
import os

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache

from vlx import compile_cache

_OPTIONS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")


@pytest.fixture
def restore_jax_config():
  """Puts JAX's cache options back (and forgets the cache) so other tests run without one."""
  saved = {name: getattr(jax.config, name) for name in _OPTIONS}
  yield saved
  for name, value in saved.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()


def test_enable_writes_entries_for_a_jitted_function(tmp_path, restore_jax_config):
  folder = tmp_path / "cache"
  got = compile_cache.enable(str(folder), min_compile_time_s=0.0)
  assert got == str(folder)
  assert jax.config.jax_compilation_cache_dir == str(folder)
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
  assert not os.listdir(folder)

  @jax.jit
  def f(x):
    return jnp.tanh(x @ x.T) * 3.0 + 0.25  # a program no other test compiles

  jax.block_until_ready(f(jnp.ones((3, 5), jnp.float32)))
  assert os.listdir(folder), "no cache entry written"


@pytest.mark.parametrize("value", ["off", "OFF", ""])
def test_off_leaves_config_unchanged(value, restore_jax_config):
  assert compile_cache.enable(value) is None
  assert {name: getattr(jax.config, name) for name in _OPTIONS} == restore_jax_config


def test_environment_variable_and_default(tmp_path, monkeypatch, restore_jax_config):
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "from_env"))
  assert compile_cache.enable(None) == str(tmp_path / "from_env")
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / "from_env")
  assert (tmp_path / "from_env").is_dir()
  monkeypatch.setenv(compile_cache.ENV, "off")
  assert compile_cache.resolve(None) is None
  monkeypatch.delenv(compile_cache.ENV)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert compile_cache.resolve(None) == str(tmp_path / "home/.cache/vlx/jax_compilation_cache")
  assert compile_cache.resolve("~/c") == str(tmp_path / "home/c")  # explicit path wins


def test_unusable_folder_only_disables(tmp_path, restore_jax_config):
  (tmp_path / "file").write_text("x")
  assert compile_cache.enable(str(tmp_path / "file" / "cache")) is None
  assert {name: getattr(jax.config, name) for name in _OPTIONS} == restore_jax_config
