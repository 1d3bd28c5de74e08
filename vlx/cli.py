"""What the command-line entry points (vlx.main, vlx.search) share: one-line errors and absl
flag parsing that turns a bad `--config.*` override into such a line instead of a traceback."""
from __future__ import annotations

import sys

from absl import flags


def fail(message: str, code: int = 2) -> None:
  """Prints `error: message` on stderr and exits with `code` (2: bad flags / config / data)."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
  """absl parsing, but a typo'd or ill-typed `--config.*` override ends with one clear line."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    detail = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split())
    fail(f"could not apply the command-line flags {bad or argv[1:]}: {detail} -- overrides must "
         "name existing fields of the config (it is locked), e.g. --config.train.num_steps=10")
    raise  # unreachable
