"""lpot-ir: accuracy-driven INT8 quantization on one ONNX-based IR, tuned with ONNX Runtime.

The LPOT user API, imported lazily (``import lpot_ir`` stays cheap)::

    from lpot_ir import Quantization, common

    quantizer = Quantization("conf.yaml")
    quantizer.model = "model.onnx"
    q_model = quantizer.fit()

* :class:`Quantization` -- accuracy-driven tuning (``lpot_ir.quantization``).
* :class:`Benchmark` -- LPOT's performance/accuracy benchmark (``lpot_ir.benchmark``).
* :class:`Pruning` -- LPOT's pruning API (``lpot_ir.pruning``), where installed.
* :func:`quantize` -- one-shot quantization with a given configuration (``lpot_ir.quantizer``).
* :mod:`common` -- ``common.DataLoader`` and ``common.Metric``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["Quantization", "Benchmark", "Pruning", "quantize", "common", "__version__"]

_LAZY = {
    "Quantization": ("lpot_ir.quantization", "Quantization"),
    "Benchmark": ("lpot_ir.benchmark", "Benchmark"),
    "Pruning": ("lpot_ir.pruning", "Pruning"),
    "quantize": ("lpot_ir.quantizer", "quantize"),
    "common": ("lpot_ir.common", None),
}


def _version() -> str:
    try:
        return version("lpot-ir")
    except PackageNotFoundError:
        return "0.0.0+unknown"


__version__ = _version()


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'lpot_ir' has no attribute {name!r}")
    module_name, attribute = target
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise AttributeError(f"lpot_ir.{name} is not available in this installation ({module_name} is missing)") from None
        raise
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
