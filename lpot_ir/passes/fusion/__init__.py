"""FP32 fusion rule sets (importing this package registers them).

* ``fuse-batchnorm``: BatchNormalization folded into Conv, ConvTranspose and Gemm.
* ``fuse-matmul-add``: MatMul + constant bias Add into Gemm.
* ``fuse-pad``: a zero constant Pad folded into the Conv that reads it.
"""

from __future__ import annotations

from lpot_ir.passes.fusion.batchnorm import batchnorm_rules
from lpot_ir.passes.fusion.gemm import gemm_rules
from lpot_ir.passes.fusion.pad import pad_rules

__all__ = ["batchnorm_rules", "gemm_rules", "pad_rules"]
