"""`python -m vlx.convert --family alpro --checkpoint FILE.pt --out DIR [--variant V]`.

Reads a released PyTorch checkpoint safely, maps it onto the vlx model and writes DIR/params
(Orbax), DIR/model_config.json and DIR/conversion_report.json. Exit code 0 only when every source
key was mapped or deliberately dropped and every model variable was filled (otherwise only the
report is written). User errors (missing or unreadable file, not a checkpoint, unsafe pickle, wrong
family or variant, shape mismatch, bad --set) print one line `python -m vlx.convert: error: ...`
without a traceback and exit with 2. `--help` lists the families and their variants.
"""
from __future__ import annotations

import argparse
import ast
import collections
import difflib
import sys
import time
from typing import Any

from vlx import cli
from vlx.convert.errors import ConversionError


def _parse_set(items: list[str]) -> dict[str, Any]:
  """['video.num_heads=4', 'head=retrieval'] -> nested override dict (values as Python literals)."""
  out: dict[str, Any] = {}
  for item in items:
    key, sep, raw = item.partition("=")
    if not sep or not key:
      raise ConversionError(f"--set {item!r}: expected FIELD=VALUE, e.g. video.num_frames=8")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


def _merged(base: dict[str, Any], wins: dict[str, Any]) -> dict[str, Any]:
  """Nested override dicts merged; `wins` (the command line) takes precedence."""
  out = dict(base)
  for key, value in wins.items():
    both = isinstance(value, dict) and isinstance(out.get(key), dict)
    out[key] = _merged(out[key], value) if both else value
  return out


def summary(report: dict[str, Any]) -> str:
  """Human-readable report: counts, unused keys grouped by reason, then the problem lists."""
  lines = [f"family {report['family']}, variant {report['variant']}: {report['mapped']} keys "
           f"mapped, {len(report['unused'])} unused, {len(report['unmapped'])} unmapped, "
           f"{len(report['missing'])} missing"]
  for reason, n in collections.Counter(report["unused"].values()).most_common():
    lines.append(f"  unused x{n}: {reason}")
  for name in ("unmapped", "missing"):
    keys = report[name]
    if keys:
      more = f" ... (+{len(keys) - 20})" if len(keys) > 20 else ""
      lines.append(f"  {name} ({'source keys' if name == 'unmapped' else 'model variables'}): "
                   + ", ".join(keys[:20]) + more)
  return "\n".join(lines)


PROG = "python -m vlx.convert"


def families_help() -> str:
  """'families and variants' for --help, read from vlx.registry and each family's converter
  module (its VARIANTS); built only when help is asked for (it imports the families)."""
  from vlx import registry  # pylint: disable=import-outside-toplevel
  lines = ["families and their variants (--family F --variant V):"]
  for name in registry.available():
    try:
      family = registry.get(name)
      if family.converter is None:
        continue
      variants = tuple(getattr(family.converter_module(), "VARIANTS", ()))
    except Exception as e:  # pylint: disable=broad-except  # help must print anyway
      lines.append(f"  {name}: (cannot be imported: {type(e).__name__}: {e})")
      continue
    lines.append(f"  {name}: {', '.join(variants) if variants else '(detected from the keys)'}")
  return "\n".join(lines)


def _parser(epilog: str | None = None) -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0], epilog=epilog,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--family", required=True, help="model family (listed below)")
  ap.add_argument("--checkpoint", required=True, help="released .pt/.pth/.ckpt file")
  ap.add_argument("--out", required=True, help="output directory (config.init.from_converted)")
  ap.add_argument("--variant", default=None,
                  help="target variant (listed below; default: detected from the keys)")
  ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                  help="model config override, e.g. video.num_frames=8 (repeatable)")
  return ap


@cli.entry_point(PROG, exit_on_error=False)
def main(argv: list[str] | None = None) -> int:
  """Exit status: 0 converted, 1 keys left unmapped / variables missing (report written),
  2 user error (one line on stderr)."""
  argv = sys.argv[1:] if argv is None else list(argv)
  wants_help = any(a in ("-h", "--help") for a in argv)
  args = _parser(families_help() if wants_help else None).parse_args(argv)
  # Imported here so that `--help` and argument errors are instant.
  from vlx.convert.engine import convert_state_dict  # pylint: disable=import-outside-toplevel
  from vlx.convert.store import (  # pylint: disable=import-outside-toplevel
      save_converted, write_report)
  from vlx.convert.torch_io import load_state_dict  # pylint: disable=import-outside-toplevel
  from vlx import registry  # pylint: disable=import-outside-toplevel
  start = time.time()
  if args.family not in registry.available():  # before reading a multi-GB file
    near = difflib.get_close_matches(args.family, registry.available(), n=1)
    raise ConversionError(f"--family {args.family}: not a vlx model family"
                          + (f"; nearest: {near[0]}" if near else "")
                          + f" (families: {', '.join(registry.available())})")
  overrides = _parse_set(args.overrides)
  variant = args.variant
  reader = getattr(registry.get(args.family).converter_module(), "read_checkpoint", None)
  if reader is None:
    source = load_state_dict(args.checkpoint)
  else:  # the converter also reads the container's other entries (as data: variant, sizes)
    source, detected, found = reader(args.checkpoint)
    variant = variant or detected
    overrides = _merged(found, overrides)
  result = convert_state_dict(args.family, source, variant=variant,
                              model_config=overrides or None)
  print(summary(result.report))
  if result.report["unmapped"] or result.report["missing"]:
    path = write_report(result.report, args.out)
    print(f"not converted: fix the unmapped/missing lists (report: {path})", file=sys.stderr)
    return 1
  out = save_converted(result, args.out)
  print(f"wrote {out} (params/, model_config.json, conversion_report.json) "
        f"in {time.time() - start:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
