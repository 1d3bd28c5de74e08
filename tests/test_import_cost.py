"""Building or stepping a model never needs TensorFlow (the input pipeline's ~0.5 GB): importing
every family leaves it unimported, so model-only processes (convert, step benchmarks, parity)
stay lean. Runs in a fresh interpreter: the test session itself has TensorFlow loaded."""
import subprocess
import sys

from vlx import registry

SCRIPT = """
import sys
from vlx import registry
for name in sys.argv[1:]:
  registry.get(name)
heavy = sorted(m for m in ("tensorflow", "tensorflow_datasets", "torch") if m in sys.modules)
print(",".join(heavy))
"""


def test_family_import_loads_no_tensorflow_or_torch():
  names = registry.available()
  assert len(names) >= 5
  out = subprocess.run([sys.executable, "-c", SCRIPT, *names], capture_output=True, text=True,
                       check=True, timeout=300)
  assert out.stdout.strip().splitlines()[-1:] in ([], [""]), out.stdout
