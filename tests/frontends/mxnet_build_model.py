"""Run with the isolated MXNet environment's Python: builds a small Gluon CNN and exports it.

Writes FOLDER/net-symbol.json, FOLDER/net-0000.params (MXNet's export naming), FOLDER/x.npy (a batch)
and FOLDER/y.npy (MXNet's own output on it); also FOLDER/odd-symbol.json + odd-0000.params, a symbol
using 'gammaln', an operator mxnet.onnx cannot convert.
"""

import sys

import mxnet as mx
import numpy as np
from mxnet.gluon import nn


def main(folder):
    mx.random.seed(0)
    rng = np.random.RandomState(0)
    net = nn.HybridSequential()
    net.add(
        nn.Conv2D(8, 3, padding=1),
        nn.BatchNorm(),
        nn.Activation("relu"),
        nn.MaxPool2D(2),
        nn.Conv2D(8, 3, padding=1),
        nn.Activation("relu"),
        nn.GlobalAvgPool2D(),
        nn.Flatten(),
        nn.Dense(5),
    )
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = rng.rand(8, 3, 16, 16).astype("float32")
    y = net(mx.nd.array(x)).asnumpy()
    net.export(folder + "/net", epoch=0)
    np.save(folder + "/x.npy", x)
    np.save(folder + "/y.npy", y)
    data = mx.sym.var("data")
    fc = mx.sym.FullyConnected(data, num_hidden=4, name="fc")
    odd = mx.sym.gammaln(mx.sym.relu(fc) + 1.0, name="lgamma_head")
    odd.save(folder + "/odd-symbol.json")
    mx.nd.save(folder + "/odd-0000.params", {"arg:fc_weight": mx.nd.ones((4, 3)), "arg:fc_bias": mx.nd.zeros((4,))})


if __name__ == "__main__":
    main(sys.argv[1])
