"""What every command-line entry point shares (vlx.main, vlx.search, vlx.convert,
vlx.convert.parity, vlx.data.pipeline, vlx-tfds): the user-error classes and ONE wrapper
(`entry_point`) that prints them as one line, `<prog>: error: <message>`, on stderr with exit
status 2 and no traceback.

A user error is bad input the user can fix: a flag, a config field, a file or folder, a dataset.
Its class derives from `UserError` (ConfigError, ConversionError, DatasetNotBuiltError,
BuilderMissingError, SplitError, AnnotationError, DatasetLayoutError, SearchError, ParityError,
the distributed flag errors), or it
is one of the OS's path errors (`PATH_ERRORS`: a missing, unreadable or wrong-kind path the user
named). Anything else is a programming error and keeps its traceback.

Also here: absl flag parsing that exits 0 on --help and turns a bad `--config.*` override into one
line naming the field (its nearest existing names for a typo, the expected type for a bad value),
and the eval-block naming rule of the command line (`eval_names_follow_builders`).
"""
from __future__ import annotations

import difflib
import functools
import importlib.util
import pkgutil
import re
import sys
from typing import Any, Callable, Sequence

from absl import flags

EXIT_USER_ERROR = 2
HELP_FLAGS = ("-h", "-help", "--help", "-?", "--helpshort", "--helpfull", "--helpxml")


class UserError(Exception):
  """Bad input the user can fix. The message stands alone and names the field, flag or file."""


class UsageError(UserError):
  """A command-line flag or argument that cannot work (including `--config.*` overrides)."""


class PathError(UserError):
  """A file or folder the user named is missing or unusable (e.g. a workdir under a file)."""


# The OS's own path errors are user errors too: at an entry point they concern a path the user gave.
PATH_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               FileExistsError)
USER_ERRORS = (UserError,) + PATH_ERRORS


def one_line(text: str) -> str:
  """Joins a (possibly multi-line) message into one line."""
  return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def describe(error: BaseException) -> str:
  """The one-line message of a user error (`path: reason` for the OS's path errors)."""
  if isinstance(error, OSError) and error.filename is not None and error.strerror:
    return f"{error.filename}: {error.strerror}"
  if isinstance(error, KeyError) and len(error.args) == 1:  # str(KeyError) adds quotes
    return one_line(str(error.args[0]))
  return one_line(str(error)) or type(error).__name__


def fail(message: str, code: int = EXIT_USER_ERROR, prog: str | None = None) -> None:
  """Prints `<prog>: error: message` (one line) on stderr and exits with `code`."""
  prefix = f"{prog}: error: " if prog else "error: "
  print(prefix + one_line(message), file=sys.stderr, flush=True)
  sys.exit(code)


def entry_point(prog: str, extra: tuple[type[BaseException], ...] = (),
                exit_on_error: bool = True) -> Callable:
  """Decorates a command's main: a user error (USER_ERRORS + `extra`) prints one line, then
  exits with status 2 (`exit_on_error`) or makes main return 2 (`sys.exit(main())` style)."""
  def wrap(main: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(main)
    def guarded(*args, **kwargs):
      try:
        return main(*args, **kwargs)
      except USER_ERRORS + tuple(extra) as e:
        if exit_on_error:
          fail(describe(e), EXIT_USER_ERROR, prog)
        print(f"{prog}: error: {describe(e)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    return guarded
  return wrap


def help_requested(argv: Sequence[str]) -> bool:
  """Whether argv (argv[0] = program) asks for help."""
  return any(a.split("=")[0] in HELP_FLAGS for a in argv[1:])


def parse_flags(argv: list[str], prog: str | None = None,
                flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl parsing for app.run: --help exits 0 (absl exits 1); a bad flag, config file or
  `--config.*` override ends with one line naming it (exit 2)."""
  if "--" not in argv:  # absl treats what follows `--` as positional arguments
    _check_config_file(argv, prog)
  try:
    return flag_values(argv)
  except SystemExit as e:
    if help_requested(argv) and e.code == 1:
      sys.exit(0)
    raise
  except (AttributeError, KeyError, TypeError, ValueError, IOError, flags.Error) as e:
    diagnosis = _diagnose_overrides(argv, flag_values) or _config_file_error(e)
    if diagnosis is None:
      bad = [a for a in argv[1:] if a.startswith(("--config.", "--noconfig."))]
      detail = describe(e)
      named = detail.startswith("flag --") or not bad
      diagnosis = detail if named else f"{' '.join(bad)}: {detail}"
    fail(diagnosis, EXIT_USER_ERROR, prog)
    raise  # unreachable


def flags_parser(prog: str) -> Callable[[list[str]], list[str]]:
  """`parse_flags` for app.run's `flags_parser=` with this command's name in its messages."""
  return functools.partial(parse_flags, prog=prog)


def _flag_value(argv: Sequence[str], name: str) -> str | None:
  """The value of --name (`--name=V` or `--name V`) in argv, the last one winning."""
  out = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}=") or arg.startswith(f"-{name}="):
      out = arg.split("=", 1)[1]
    elif arg in (f"--{name}", f"-{name}") and i + 1 < len(argv):
      out = argv[i + 1]
  return out


def _example_config() -> str:
  """A config file that exists, for messages (the first registered family's pre-training)."""
  from vlx import registry  # pylint: disable=import-outside-toplevel
  families = registry.available()
  return f"{families[0]}_pretrain.py" if families else "<family>_pretrain.py"


def _check_config_file(argv: Sequence[str], prog: str | None) -> None:
  """--config FILE[:preset] whose FILE does not exist: one line (ml_collections defers it)."""
  import os  # pylint: disable=import-outside-toplevel
  value = _flag_value(argv, "config")
  if value and not os.path.isfile(value.split(":", 1)[0]) and not help_requested(argv):
    fail(f"--config={value}: no such file {value.split(':', 1)[0]!r} (expected a config file "
         "such as configs/<family>_<task>.py[:preset], e.g. configs/"
         f"{_example_config()}[:demo])", EXIT_USER_ERROR, prog)


def _config_file_error(e: BaseException) -> str | None:
  """ml_collections wraps get_config's own error in a traceback text: keep its last line."""
  text = str(e)
  if "Error whilst parsing config file" not in text:
    return None
  match = re.search(r"--(\w+)=(\S+)", text)
  last = [l for l in text.splitlines() if l.strip()][-1].strip()
  last = re.sub(r"^\w+(Error|Exception): ", "", last).rstrip("'\"")
  return f"--{match.group(1)}={match.group(2).rstrip(':')}: {last}" if match else last


_TYPES = ((bool, "true or false", flags.BooleanParser()),
          (int, "an integer", flags.IntegerParser()), (float, "a number", flags.FloatParser()))


def _diagnose_overrides(argv: Sequence[str], flag_values: flags.FlagValues,
                        name: str = "config") -> str | None:
  """The first `--config.*` override that names no field or has a value of the wrong type, as
  a one-line message; None when every override looks fine (the error is elsewhere)."""
  value = _flag_value(argv, name)
  if not value or name not in flag_values:
    return None
  try:  # the same loader the flag uses; get_config is cheap
    config = flag_values[name].parser.parse(value)
  except Exception:  # pylint: disable=broad-except
    return None
  for i, arg in enumerate(argv):
    match = re.match(rf"^--?(no)?{name}\.([^=]+)(=(.*))?$", arg, re.S)
    if not match:
      continue
    path = match.group(2).split(".")
    if match.group(3) is not None:
      raw = match.group(4)
    elif match.group(1):
      raw = "false"
    else:
      nxt = argv[i + 1] if i + 1 < len(argv) else ""
      raw = nxt if nxt and not nxt.startswith("-") else "true"
    problem = check_override(config, path, raw, name)
    if problem:
      return f"{arg}: {problem}"
  return None


def check_override(config: Any, path: Sequence[str], raw: str, name: str = "config") -> str | None:
  """Why `--<name>.<path>=raw` cannot apply to `config` (unknown field, wrong type), else None."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  node, where = config, name
  for key in path:
    if not isinstance(node, (ml_collections.ConfigDict, dict)):
      return f"{where} is a value ({node!r}), not a block: it has no field {key!r}"
    if key not in node:
      fields = sorted(str(k) for k in node.keys())
      near = difflib.get_close_matches(key, fields, n=3, cutoff=0.6)
      if near:
        return f"{where} has no field {key!r}; nearest: {', '.join(f'{where}.{n}' for n in near)}"
      more = f", ... ({len(fields)} fields)" if len(fields) > 12 else ""
      listed = ", ".join(fields[:12]) + more
      return f"{where} has no field {key!r}; its fields: {listed or '(none)'}"
    node, where = node[key], f"{where}.{key}"
  for kind, described, parser in _TYPES:
    if type(node) is kind:  # pylint: disable=unidiomatic-typecheck
      try:
        parser.parse(raw)
      except (TypeError, ValueError):
        return f"{where} expects {described} (it is {node!r}), got {raw!r}"
      break
  return None


def builder_names() -> tuple[str, ...]:
  """The dataset builders of data_builders/ (folder names), without importing TensorFlow."""
  spec = importlib.util.find_spec("data_builders")
  if spec is None or not spec.submodule_search_locations:
    return ()
  return tuple(sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)
                      if m.ispkg))


def eval_names_follow_builders(config, builders: tuple[str, ...]) -> dict[str, str]:
  """Renames eval blocks whose name starts with a dataset's name when their builder is another
  one (on the command line: `--config.evals.moving_shapes_test.builder=video_text` logs
  `eval/video_text_test/...`); names without a dataset (`test`, `test_vtc`) stay, and so does a
  block whose new name is taken. Returns {old: new} of the renamed blocks."""
  renames: dict[str, str] = {}
  for name, ev in config.evals.items():
    builder = str(ev.get("builder", "") or "")
    for prefix in sorted(builders, key=len, reverse=True):
      if name == prefix or name.startswith(prefix + "_"):
        new = builder + name[len(prefix):]
        taken = new in config.evals or new in renames.values()
        if builder and prefix != builder and not taken:
          renames[name] = new
        break
  if renames:
    blocks = [(renames.get(n, n), ev) for n, ev in config.evals.items()]
    import ml_collections  # pylint: disable=import-outside-toplevel
    with config.unlocked():
      config.evals = ml_collections.ConfigDict(dict(blocks))
  return renames
