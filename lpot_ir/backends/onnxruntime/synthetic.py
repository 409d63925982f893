"""Synthetic inputs for a model: random arrays of the right dtypes and shapes (``lpot benchmark MODEL``).

Shapes: static dimensions are kept. A dynamic dimension (symbolic or unknown) on the first axis becomes
``batch_size``; a dynamic dimension on any other axis becomes :data:`DEFAULT_DYNAMIC_DIM` (1). An input
of unknown rank is a 1-D array of ``batch_size``. When that is not what the model needs (e.g. an image
model with dynamic height and width), give the full shape per input: ``shapes={"data": (1, 3, 224, 224)}``
or on the command line ``--shape data:1x3x224x224``.

Values: floats are standard normal, integers are 0 or 1 (safe as indices), bools are random.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx

from lpot_ir.backends.onnxruntime.session import InputSpec, input_specs
from lpot_ir.errors import DataError, ModelLoadError

__all__ = ["DEFAULT_DYNAMIC_DIM", "synthetic_shapes", "synthetic_inputs", "parse_shape_overrides"]

DEFAULT_DYNAMIC_DIM = 1
"""Size given to a dynamic dimension that is not the first axis."""


def _specs(model: Any) -> list[InputSpec]:
    if isinstance(model, (str, os.PathLike, bytes, bytearray)):
        try:
            if isinstance(model, (bytes, bytearray)):
                proto = onnx.load_model_from_string(bytes(model))
            else:
                proto = onnx.load(os.fspath(model), load_external_data=False)
        except Exception as exc:
            raise ModelLoadError(f"Cannot read the model to make synthetic inputs: {exc}") from None
        return input_specs(proto)
    return input_specs(model)


def synthetic_shapes(
    model: Any, batch_size: int = 1, shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """The concrete shape of every input (see the module docstring for the rules).

    Args:
        model: a session, ``onnx_ir.Model``, ``onnx.ModelProto``, path, bytes, or a list of ``InputSpec``.
        batch_size: the size of a dynamic first axis.
        shapes: full shapes for some inputs, by name; they must agree with the model's static dims.

    Raises:
        DataError: ``shapes`` names an input the model does not have, or contradicts a static dimension.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}.")
    specs = _specs(model)
    overrides = dict(shapes or {})
    unknown = [name for name in overrides if name not in {s.name for s in specs}]
    if unknown:
        raise DataError(
            f"A shape was given for input(s) {', '.join(repr(n) for n in unknown)} that the model does not have; "
            f"its inputs are {', '.join(f'{s.name!r} {s.shape_text()}' for s in specs) or 'none'}."
        )
    result: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        if spec.name in overrides:
            shape = tuple(int(d) for d in overrides[spec.name])
            if spec.shape is not None:
                bad = len(shape) != len(spec.shape) or any(
                    isinstance(w, int) and w != g for w, g in zip(spec.shape, shape, strict=True)
                )
                if bad:
                    raise DataError(
                        f"The shape {shape} given for input '{spec.name}' does not fit the model's shape "
                        f"{spec.shape_text()} (same rank; static dimensions must be equal)."
                    )
            result[spec.name] = shape
        elif spec.shape is None:
            result[spec.name] = (batch_size,)
        else:
            result[spec.name] = tuple(
                d if isinstance(d, int) else (batch_size if axis == 0 else DEFAULT_DYNAMIC_DIM)
                for axis, d in enumerate(spec.shape)
            )
    return result


def synthetic_inputs(
    model: Any,
    batch_size: int = 1,
    seed: int = 0,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, np.ndarray]:
    """A feed of random arrays matching the model's inputs (dtypes and shapes; see the module docstring).

    Raises:
        DataError: see :func:`synthetic_shapes`; an input of a type that cannot be synthesized (strings).
    """
    rng = np.random.default_rng(seed)
    dtypes = {s.name: s.dtype for s in _specs(model)}
    feed: dict[str, np.ndarray] = {}
    for name, shape in synthetic_shapes(model, batch_size, shapes).items():
        dtype = dtypes[name]
        if dtype.kind == "f":
            feed[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feed[name] = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feed[name] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise DataError(
                f"Input '{name}' has dtype {dtype}, for which no synthetic data can be made; give real data."
            )
    return feed


def parse_shape_overrides(texts: Sequence[str], input_names: Sequence[str] = ()) -> dict[str, tuple[int, ...]]:
    """Parse ``NAME:1x3x224x224`` strings (the CLI's ``--shape``) into ``{name: shape}``.

    A text without ``NAME:`` is allowed when the model has exactly one input (``input_names``).

    Raises:
        DataError: a text that is not ``NAME:DIMSxDIMS...`` with positive integer dims.
    """
    result: dict[str, tuple[int, ...]] = {}
    for text in texts:
        name, sep, dims = text.rpartition(":")
        if not sep:
            if len(input_names) != 1:
                raise DataError(
                    f"--shape {text!r} has no input name; write NAME:DIMS (e.g. data:1x3x224x224). The model's "
                    f"inputs are {', '.join(input_names) or 'none'}."
                )
            name = input_names[0]
        try:
            shape = tuple(int(d) for d in dims.lower().replace(",", "x").split("x"))
        except ValueError:
            shape = ()
        if not name or not shape or any(d < 1 for d in shape):
            raise DataError(
                f"--shape {text!r} is not NAME:DIMS with positive integer dims separated by 'x' "
                "(e.g. data:1x3x224x224)."
            )
        result[name] = shape
    return result
