"""What every frontend returns: :class:`ConvertedModel`, plus helpers the frontends share."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import onnx

__all__ = ["FRAMEWORKS", "ConvertedModel", "graph_io_names"]

logger = logging.getLogger(__name__)

FRAMEWORKS = ("onnx", "pytorch", "tensorflow", "keras", "mxnet")
"""The framework names :func:`lpot_ir.frontends.detect_framework` returns."""


@dataclasses.dataclass(frozen=True)
class ConvertedModel:
    """A framework model converted to ONNX, with the way back to the framework's own names.

    Attributes:
        model: the ONNX model (FP32, default opset of the conversion, dynamic batch axis if asked).
        framework: one of :data:`FRAMEWORKS`: where the model came from.
        name_map: ONNX node name -> the framework's name for it (PyTorch module path such as
            ``layer1.0.conv1``, TensorFlow op name, MXNet symbol name). Several ONNX nodes may map to
            one framework name (a ``Linear`` on 3-D input becomes MatMul + Add).
        input_names: the ONNX graph's input names, in order.
        output_names: the ONNX graph's output names, in order.
        notes: one line per thing the conversion did, for reports.
        output_structure: framework-specific description of how the flat ONNX outputs nest in the
            framework's own output (a ``torch.utils._pytree.TreeSpec`` for PyTorch), or ``None``.
    """

    model: onnx.ModelProto
    framework: str
    name_map: Mapping[str, str]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    notes: tuple[str, ...] = ()
    output_structure: object | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def aliases_map(self) -> dict[str, str] | None:
        """The name map as configuration scopes and quantizers take it: only nodes whose framework name
        differs from their ONNX name (``None`` when none does, e.g. for an ONNX model)."""
        return {k: v for k, v in self.name_map.items() if v and v != k} or None

    def aliases(self, node_name: str) -> tuple[str, ...]:
        """Framework names of one ONNX node (empty when it has none or the same name)."""
        name = self.name_map.get(node_name)
        return (name,) if name and name != node_name else ()

    def nodes_named(self, framework_name: str) -> tuple[str, ...]:
        """ONNX node names whose framework name is ``framework_name``."""
        return tuple(n for n, f in self.name_map.items() if f == framework_name)


def graph_io_names(model: onnx.ModelProto) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Graph input names (initializers excluded) and output names of ``model``."""
    inits = {i.name for i in model.graph.initializer}
    inputs = tuple(i.name for i in model.graph.input if i.name not in inits)
    outputs = tuple(o.name for o in model.graph.output)
    return inputs, outputs
