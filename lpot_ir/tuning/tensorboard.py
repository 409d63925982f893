"""TensorBoard event files per tuning trial (``tuning.tensorboard: true``).

For each trial, :class:`TensorBoardWriter` writes ``<workspace>/tensorboard/trial_<n>/`` with the
``tensorboardX`` writer:

* **histograms** of each op's output on the calibration samples, FP32 against INT8: ``<node>/output/fp32``
  (the FP32 model) and ``<node>/output/int8`` (the candidate: the dequantized tensor its consumers read,
  i.e. ``DQ(Q(y))`` when the output is quantized, else the float output, which upstream quantization
  already moved); and of its quantized weights, ``<node>/weight/fp32`` and ``<node>/weight/int8``
  (dequantized); ``<node>`` is the node's name without a leading ``/`` (``layer1/conv1/Conv``), so
  TensorBoard groups the tags by the model's hierarchy. Biases and other quantized constant inputs get
  ``<node>/input<i>/...``.
* **scalars**: ``error/<node>``, the per-channel normalized squared error of the INT8 output against the
  FP32 one (:func:`lpot_ir.tuning.sensitivity.normalized_error`, the tuning loop's measure), and
  ``trial/accuracy``, ``trial/meets_goal`` and ``trial/<objective>`` at step ``n``.
* **the candidate graph** (TensorBoard's Graphs tab): every node with its op type, attributes and the
  quantization parameters of Q/DQ nodes; a node's *device* is ``/int8`` when it reads dequantized inputs
  and ``/fp32`` otherwise, so "color by device" shows which ops run quantized.

Values come from one instrumented ONNX Runtime run of each model
(:func:`~lpot_ir.backends.onnxruntime.profiling.instrumented_model`), on at most ``max_samples``
calibration samples. ``lpot tensorboard WORKSPACE`` prints (or runs) the command that opens them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from lpot_ir.backends.onnxruntime.batching import BatchLayout
from lpot_ir.backends.onnxruntime.profiling import instrumented_model, run_all_values
from lpot_ir.errors import ConfigError
from lpot_ir.tuning.sensitivity import normalized_error

__all__ = ["TENSORBOARD_DIR", "TensorBoardWriter", "graph_def", "node_tag", "tensorboard_command"]

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
"""The folder under the workspace holding one run per trial (``trial_<n>``)."""

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def _summary_writer(logdir: Path) -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ConfigError(
            "tuning.tensorboard: true needs tensorboardX (and tensorboard to view the files): "
            "pip install tensorboardX tensorboard (make install installs both)."
        ) from None
    return SummaryWriter(logdir=str(logdir), flush_secs=3600)


def tensorboard_command(workspace: str | os.PathLike[str]) -> list[str]:
    """The command that opens a workspace's TensorBoard runs: ``tensorboard --logdir <workspace>/tensorboard``."""
    return ["tensorboard", "--logdir", str(Path(workspace) / TENSORBOARD_DIR)]


def graph_def(model: onnx.ModelProto, quantized: set[str] | None = None) -> Any:
    """The model as a TensorBoard ``GraphDef`` (tensorboardX's protos): nodes by name with their op
    types, inputs (producer node names), attributes and output shapes.

    A node's device is ``/int8`` when it runs quantized: it is in ``quantized`` (a ``QuantizedModel``'s
    decisions), or, without that set, every one of its inputs is dequantized; Q/DQ nodes are ``/int8``
    and everything else ``/fp32``.
    """
    from tensorboardX.proto.attr_value_pb2 import AttrValue
    from tensorboardX.proto.graph_pb2 import GraphDef
    from tensorboardX.proto.node_def_pb2 import NodeDef
    from tensorboardX.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboardX.proto.versions_pb2 import VersionDef

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference failing only loses the edge shapes
        inferred = model
    graph = inferred.graph
    shapes: dict[str, list[int]] = {}
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    constants = {init.name: init for init in graph.initializer}
    producer: dict[str, str] = {}
    nodes: list[Any] = []

    def shape_attr(names: Sequence[str]) -> AttrValue:
        listed = [TensorShapeProto(dim=[TensorShapeProto.Dim(size=d) for d in shapes.get(n, [])]) for n in names]
        return AttrValue(list=AttrValue.ListValue(shape=listed))

    for vi in graph.input:
        if vi.name not in constants:
            nodes.append(NodeDef(name=vi.name, op="Input", attr={"_output_shapes": shape_attr([vi.name])}))
            producer[vi.name] = vi.name
    for init in graph.initializer:
        dims = list(init.dims)
        nodes.append(NodeDef(name=init.name, op="Const", attr={
            "dtype": AttrValue(s=onnx.helper.tensor_dtype_to_np_dtype(init.data_type).name.encode()),
            "_output_shapes": AttrValue(list=AttrValue.ListValue(shape=[TensorShapeProto(dim=[TensorShapeProto.Dim(size=d) for d in dims])])),
        }))  # fmt: skip
        producer[init.name] = init.name
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        for out in node.output:
            producer[out] = name
    kinds = {n.name or f"{n.op_type}_{i}": n.op_type for i, n in enumerate(graph.node)}
    for index, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{index}"
        attrs: dict[str, Any] = {}
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                continue
            value = onnx.helper.get_attribute_value(attr)
            if attr.type == onnx.AttributeProto.TENSOR:
                value = numpy_helper.to_array(value).tolist()
            attrs[attr.name] = AttrValue(s=str(value).encode()[:1000])
        if node.op_type in _QDQ:
            for label, position in (("scale", 1), ("zero_point", 2)):
                if len(node.input) > position and node.input[position] in constants:
                    array = numpy_helper.to_array(constants[node.input[position]])
                    text = str(array.tolist()) if array.size <= 16 else f"{array.size} values, {array.min()}..{array.max()}"
                    attrs[label] = AttrValue(s=text.encode())
        attrs["_output_shapes"] = shape_attr(list(node.output))
        inputs = [producer[i] for i in node.input if i and i in producer]
        if quantized is not None:
            int8 = name in quantized
        else:
            int8 = bool(node.input) and all(kinds.get(producer.get(i, ""), "") == "DequantizeLinear" for i in node.input if i)
        device = "/int8" if int8 or node.op_type in _QDQ else "/fp32"
        nodes.append(NodeDef(name=name, op=node.op_type, input=inputs, device=device, attr=attrs))
    return GraphDef(node=nodes, versions=VersionDef(producer=22))


class TensorBoardWriter:
    """Writes a trial's TensorBoard run; the tuning loop calls it after each trial (an observer).

    Args:
        workspace: the tuning workspace (runs go to ``<workspace>/tensorboard/trial_<n>``).
        fp32_model: the FP32 model the candidates are quantized from (node names must match theirs: the
            optimized model the quantizer starts from).
        feeds: calibration feeds (``{input name: array}``); the first one, cut to ``max_samples``, is used.
        max_samples: samples the instrumented runs use (activations of every op are kept in memory).
        batch_axes: ``{input name: batch axis}`` where the model's dimension names do not tell.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        fp32_model: onnx.ModelProto,
        feeds: Sequence[Mapping[str, np.ndarray]],
        *,
        max_samples: int = 8,
        batch_axes: Mapping[str, int | None] | None = None,
    ) -> None:
        self.folder = Path(workspace) / TENSORBOARD_DIR
        self.fp32_model = fp32_model
        self.feed: dict[str, np.ndarray] | None = None
        if feeds:
            layout = BatchLayout(fp32_model, batch_axes)
            self.feed = dict(layout.head(feeds[0], max(1, int(max_samples))))
        self._fp32_values: dict[str, np.ndarray] | None = None
        self._fp32_nodes = {n.name: n for n in fp32_model.graph.node if n.name}
        self._fp32_constants = {i.name: i for i in fp32_model.graph.initializer}

    def __call__(self, index: int, config: Any, quantized: Any, result: Any) -> None:
        """The loop's observer hook: write trial ``index`` (``quantized`` is ``None`` when it failed)."""
        if quantized is None:
            return
        self.write_trial(index, quantized, result)

    def _fp32(self) -> dict[str, np.ndarray]:
        if self._fp32_values is None:
            assert self.feed is not None
            self._fp32_values = run_all_values(instrumented_model(self.fp32_model)[0], self.feed)
        return self._fp32_values

    def write_trial(self, index: int, quantized: Any, result: Any = None) -> Path:
        """Write ``trial_<index>`` for a ``QuantizedModel`` (or a Q/DQ ``ModelProto``); returns its folder."""
        model = quantized.model if hasattr(quantized, "model") else quantized
        decisions = getattr(quantized, "decisions", None)
        int8_nodes = {name for name, d in decisions.items() if getattr(d, "quantized", False)} if decisions else None
        logdir = self.folder / f"trial_{index}"
        writer = _summary_writer(logdir)
        try:
            writer.file_writer.add_onnx_graph(graph_def(model, int8_nodes))  # a GraphDef event (the method's name notwithstanding)
            if result is not None:
                self._write_result(writer, index, result)
            if self.feed is not None:
                self._write_tensors(writer, index, model)
        finally:
            writer.close()
        logger.info("TensorBoard: wrote trial %d to %s", index, logdir)
        return logdir

    @staticmethod
    def _write_result(writer: Any, index: int, result: Any) -> None:
        if getattr(result, "accuracy", None) is not None:
            writer.add_scalar("trial/accuracy", float(result.accuracy), index)
        writer.add_scalar("trial/meets_goal", float(bool(getattr(result, "meets_goal", False))), index)
        for name, value in (getattr(result, "objectives", None) or {}).items():
            writer.add_scalar(f"trial/{name}", float(value), index)

    def _write_tensors(self, writer: Any, index: int, model: onnx.ModelProto) -> None:
        assert self.feed is not None
        int8_values = run_all_values(instrumented_model(model)[0], self.feed)
        fp32_values = self._fp32()
        producers = {out: node for node in model.graph.node for out in node.output}
        readers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
        constants = {i.name: i for i in model.graph.initializer}
        for node in model.graph.node:
            fp32_node = self._fp32_nodes.get(node.name)
            if node.op_type in _QDQ or fp32_node is None or not node.output or not fp32_node.output:
                continue
            reference = fp32_values.get(fp32_node.output[0])
            actual = int8_values.get(_dequantized_view(node.output[0], readers))
            tag = node_tag(node.name)
            if reference is not None and actual is not None and actual.shape == reference.shape:
                writer.add_histogram(f"{tag}/output/fp32", reference, index)
                writer.add_histogram(f"{tag}/output/int8", actual, index)
                writer.add_scalar(f"error/{tag}", normalized_error(actual, reference), index)
            for position, name in enumerate(node.input):
                dq = producers.get(name)
                if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in constants:
                    continue
                if position >= len(fp32_node.input) or fp32_node.input[position] not in self._fp32_constants:
                    continue
                kind = "weight" if position == 1 else f"input{position}"
                fp32_weight = numpy_helper.to_array(self._fp32_constants[fp32_node.input[position]])
                writer.add_histogram(f"{tag}/{kind}/fp32", fp32_weight, index)
                if name in int8_values:
                    writer.add_histogram(f"{tag}/{kind}/int8", int8_values[name], index)


def node_tag(name: str) -> str:
    """A node's tag prefix: its name without a leading ``/`` (``/layer1/conv1/Conv`` -> ``layer1/conv1/Conv``)."""
    return name.lstrip("/")


def _dequantized_view(value: str, readers: Mapping[str, list[onnx.NodeProto]]) -> str:
    """The tensor consumers of ``value`` read: the output of ``DQ(Q(value))`` when it is quantized."""
    for q in readers.get(value, []):
        if q.op_type == "QuantizeLinear":
            for dq in readers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    return str(dq.output[0])
    return value
