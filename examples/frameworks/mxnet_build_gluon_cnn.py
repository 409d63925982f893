"""Runs in an MXNet 1.9 environment (the isolated one lpot-ir creates): train a tiny Gluon CNN, export it.

Usage: <mxnet-env>/bin/python -I mxnet_build_gluon_cnn.py FOLDER
Writes FOLDER/quadrants-symbol.json and FOLDER/quadrants-0000.params (``HybridBlock.export`` naming) and
FOLDER/test_x.npy, FOLDER/test_y.npy.
"""

import sys

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from mxnet.gluon import nn


def quadrant_images(n, rng):
    x = rng.rand(n, 3, 16, 16).astype("float32") * 0.5
    y = rng.randint(0, 4, n)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, :, r * 8 : (r + 1) * 8, col * 8 : (col + 1) * 8] += 0.5
    return x, y


def main(folder):
    mx.random.seed(0)
    rng = np.random.RandomState(0)
    x_train, y_train = quadrant_images(512, rng)
    x_test, y_test = quadrant_images(256, rng)
    net = nn.HybridSequential()
    net.add(
        nn.Conv2D(8, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"), nn.MaxPool2D(2),
        nn.Conv2D(16, 3, padding=1), nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(4),
    )
    net.initialize(mx.init.Xavier())
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.01})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(8):
        for i in range(0, len(x_train), 32):
            data, label = mx.nd.array(x_train[i : i + 32]), mx.nd.array(y_train[i : i + 32])
            with autograd.record():
                loss = loss_fn(net(data), label)
            loss.backward()
            trainer.step(data.shape[0])
    net.export(folder + "/quadrants", epoch=0)
    np.save(folder + "/test_x.npy", x_test)
    np.save(folder + "/test_y.npy", y_test)


if __name__ == "__main__":
    main(sys.argv[1])
