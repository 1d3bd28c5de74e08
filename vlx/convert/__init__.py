"""vlx.convert: released PyTorch checkpoints -> vlx (nnx) models.

`python -m vlx.convert --family alpro --checkpoint FILE.pt --out DIR` (see __main__.py);
`python -m vlx.convert.parity` runs reference fixtures (parity.py); `init_from_backbones` fills a
model from public BERT / ViT weights for training from scratch (backbones.py).
"""
from vlx.convert.backbones import init_from_backbones
from vlx.convert.engine import ConversionResult, Rule, Tied, convert_state_dict, convert_with
from vlx.convert.errors import (CheckpointNotFoundError, ConversionError, MissingTorchError,
                                ShapeMismatchError, UnsafeCheckpointError, WrongFamilyError)
from vlx.convert.store import load_converted, save_converted
from vlx.convert.torch_io import load_state_dict

__all__ = [
    "CheckpointNotFoundError", "ConversionError", "ConversionResult", "MissingTorchError", "Rule",
    "ShapeMismatchError", "Tied", "UnsafeCheckpointError", "WrongFamilyError",
    "convert_state_dict", "convert_with", "init_from_backbones", "load_converted",
    "load_state_dict", "save_converted",
]
