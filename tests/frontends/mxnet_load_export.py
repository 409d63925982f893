"""Run with the isolated MXNet environment's Python: load an exported INT8 model the two standard ways
(Gluon's SymbolBlock.imports and Module + load_checkpoint) and save their outputs on a batch.

argv: PREFIX X.npy OUT.npz -> OUT.npz holds "gluon" and "module" outputs and "int_params" (params stored
as int8/uint8).
"""

import sys

import mxnet as mx
import numpy as np


def main(prefix, x_path, out_path):
    x = np.load(x_path)
    block = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", ["data"], prefix + "-0000.params")
    gluon = block(mx.nd.array(x)).asnumpy()
    symbol, args, aux = mx.model.load_checkpoint(prefix, 0)
    module = mx.mod.Module(symbol, data_names=["data"], label_names=None)
    module.bind(data_shapes=[("data", x.shape)], for_training=False)
    module.set_params(args, aux)
    module.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=False)
    int_params = sum(1 for v in args.values() if v.dtype in (np.int8, np.uint8))
    np.savez(out_path, gluon=gluon, module=module.get_outputs()[0].asnumpy(), int_params=int_params)


if __name__ == "__main__":
    main(*sys.argv[1:4])
