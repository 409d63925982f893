"""User-facing errors: each carries one paragraph that names what is wrong and how to fix it.

Every error a user can cause (a bad model file, a wrong YAML key, data of the wrong shape, an eval
function that raises) is raised as a subclass of :class:`LpotError`. The CLI prints ``str(error)``
and exits with code 2, without a traceback; the Python API lets it propagate.
"""

from __future__ import annotations

__all__ = [
    "LpotError",
    "ModelLoadError",
    "ConfigError",
    "DataError",
    "EvaluationError",
    "ConversionError",
    "QuantizationError",
    "PassError",
    "WriteError",
    "first_line",
    "paragraph",
    "with_origin",
]


class LpotError(Exception):
    """Base class of every error caused by user input. ``str(err)`` is a complete paragraph.

    Attributes:
        origin: where it was raised, when a pass or rule added it (:func:`with_origin`), else ``None``.
    """

    origin: str | None = None


class ModelLoadError(LpotError):
    """A model path or object that cannot be loaded (missing, not ONNX, truncated, invalid)."""


class ConfigError(LpotError):
    """A YAML file or configuration object that does not fit the schema."""


class DataError(LpotError):
    """Calibration or evaluation data that does not fit the model (shape, rank, dtype, missing input)."""


class EvaluationError(LpotError):
    """A user's eval function or metric that raised or returned something unusable."""


class ConversionError(LpotError):
    """A framework model that the frontend cannot convert (names the op and the framework's name)."""


class QuantizationError(LpotError):
    """A quantization request that cannot be satisfied (e.g. a recipe that does not fit the model)."""


class PassError(LpotError):
    """A rewrite rule or a pass raised: the message names the pass, and for a rule the rule and the node."""


class WriteError(LpotError, OSError):
    """A file that could not be written (full disk, file size limit, read-only or forbidden folder).

    Raised by :mod:`lpot_ir.fileio`; the file that was there before is unchanged. It is also an ``OSError``
    (with the original ``errno``), so code that handles I/O errors keeps working.
    """

    def __str__(self) -> str:  # the paragraph, not OSError's "[Errno N] strerror: filename"
        return str(self.args[0]) if self.args else ""


def first_line(exc: BaseException) -> str:
    """``ExcType: first line of the message`` (what a failed trial records, and what wrapped errors quote)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def paragraph(text: object) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space), for quoting a library's
    multi-line message inside an error paragraph."""
    return " ".join(str(text).split())


def with_origin(error: LpotError, origin: str) -> LpotError:
    """Start ``error``'s paragraph with where it was raised (``"Pass 'annotate' on Conv node 'c1'"``).

    The error keeps its class (and so its ``except`` clauses); only the innermost place is named, so an
    error that crosses a rule, its rule set and the pipeline says the rule and the node once.

    Returns:
        ``error`` itself.
    """
    if error.origin is None:
        error.origin = origin
        error.args = (f"{origin}: {error}",)
    return error
