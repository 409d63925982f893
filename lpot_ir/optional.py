"""Loading optional frameworks (pyproject extras) with an error that says what to install.

A top-level utility like :mod:`lpot_ir.fileio`: the frontends and the lowerings back to a framework both
need it, and neither may import the other's package.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lpot_ir.errors import ConversionError

__all__ = ["import_tensorflow"]


def import_tensorflow() -> Any:
    """Import TensorFlow quietly (C++ logging off unless the user set it).

    Raises:
        ConversionError: TensorFlow is not installed (says what to install).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError:
        raise ConversionError(
            "TensorFlow models need tensorflow and tf2onnx: pip install 'tensorflow-cpu==2.21.0' "
            "'tf2onnx==1.17.0' (or pip install 'lpot-ir[tensorflow]')."
        ) from None
    tf.get_logger().setLevel(logging.ERROR)
    return tf
