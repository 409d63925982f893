"""Run inside the isolated MXNet environment (mxnet 1.9.1, numpy<1.24, onnx<1.15): symbol + params -> ONNX.

This file is executed by path with that environment's interpreter; it must not import lpot_ir. It reads a
JSON request from argv[1] and writes a JSON reply to argv[2]:
request: {"symbol", "params", "shapes": [[...]], "dtypes": [...], "dynamic", "output"}
reply: {"ok": true} or {"ok": false, "kind": "unsupported"|"error", "op": ..., "message": ...}
"""

import json
import re
import sys
import traceback


def main(request_path, reply_path):
    with open(request_path, encoding="utf-8") as f:
        req = json.load(f)
    reply = {"ok": False, "kind": "error", "message": ""}
    try:
        import mxnet as mx
        import numpy as np
        from mxnet import onnx as mx_onnx

        sym = mx.sym.load(req["symbol"])
        params = {k.split(":", 1)[-1]: v for k, v in mx.nd.load(req["params"]).items()}
        mx_onnx.export_model(
            sym,
            params,
            [tuple(s) for s in req["shapes"]],
            [np.dtype(d) for d in req["dtypes"]],
            req["output"],
            verbose=False,
            dynamic=bool(req.get("dynamic", True)),
            dynamic_input_shapes=[[None, *s[1:]] for s in req["shapes"]]
            if req.get("dynamic", True)
            else None,
        )
        reply = {"ok": True}
    except Exception as exc:  # reported to the parent process, which raises a ConversionError
        text = str(exc)
        match = re.search(r"No conversion function registered for op type (\S+?)\.? yet", text) or re.search(
            r"[Oo]perator (\S+) is not supported", text
        )
        reply = {
            "ok": False,
            "kind": "unsupported" if match else "error",
            "op": match.group(1) if match else None,
            "message": f"{type(exc).__name__}: {text}".strip(),
            "traceback": traceback.format_exc(limit=4),
        }
    with open(reply_path, "w", encoding="utf-8") as f:
        json.dump(reply, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
