"""Fixtures of the fault tests: the bundled digits example (built once, cached) and its quantizer."""

from __future__ import annotations

import pytest

from lpot_ir.examples_data import DigitsExample, digits_example
from lpot_ir.quantizer import ModelQuantizer


@pytest.fixture(scope="session")
def digits() -> DigitsExample:
    return digits_example()


@pytest.fixture(scope="session")
def quantizer(digits: DigitsExample) -> ModelQuantizer:
    return ModelQuantizer(digits.model_path, digits.calib_dataloader(batch_size=10))
