"""``tlkit export``: a finished run's model (backbone + head) as a file any runtime runs, or as a
folder the ecosystem's own loaders read, each checked against the run's PyTorch model on real
examples (a difference above ``TOLERANCE`` is an error).

- ``run.py``: ``export_run``, the command's checks in order, then a file or a folder
- ``common.py``: the formats, where each is written, the output rule's checks, the check
  against PyTorch
- ``onnx.py``, ``torchscript.py``: the files
- ``hf.py``, ``timm.py``, ``peft.py``: the folders transformers, timm and PEFT load
  (``modeling_tlkit.py``: the hf export's model class, copied beside its weights)
"""

from tlkit.export.common import (CHECK_BATCH, FOLDER_FORMATS, FORMATS, TOLERANCE, ExportResult,
                                 check_outputs, default_output, description_path,
                                 tokenizer_path)
from tlkit.export.run import export_run

__all__ = [
    "CHECK_BATCH",
    "FOLDER_FORMATS",
    "FORMATS",
    "TOLERANCE",
    "ExportResult",
    "check_outputs",
    "default_output",
    "description_path",
    "tokenizer_path",
    "export_run",
]
