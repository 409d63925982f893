"""Calibration: tensor ranges from one instrumented ONNX Runtime run over the calibration data.

``calibrate(model, dataloader, algorithms=(...))`` returns a :class:`CalibrationResult` whose
``range(name, algorithm)`` is a :class:`~lpot_ir.ir.quant.TensorRange`. Statistics are running min/max
and bounded histograms (memory does not grow with the number of samples); results are cached on disk
when a ``cache_dir`` is given. ``load_calibration_files`` turns ``.npy``/``.npz`` files into a dataloader.
"""

from __future__ import annotations

from lpot_ir.calibration.algorithms import DEFAULT_PERCENTILE, compute_range, weight_range
from lpot_ir.calibration.calibrator import calibrate
from lpot_ir.calibration.files import NumpyBatches, load_calibration_files
from lpot_ir.calibration.result import CalibrationResult, ChannelRange
from lpot_ir.calibration.statistics import ChannelStatistics, Histogram, TensorStatistics
from lpot_ir.ir.quant import CalibAlgorithm, TensorRange

__all__ = [
    "DEFAULT_PERCENTILE",
    "CalibAlgorithm",
    "CalibrationResult",
    "ChannelRange",
    "ChannelStatistics",
    "Histogram",
    "NumpyBatches",
    "TensorRange",
    "TensorStatistics",
    "calibrate",
    "compute_range",
    "load_calibration_files",
    "weight_range",
]
