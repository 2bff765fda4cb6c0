"""Train the HAWQ paper's jet tagger shape for a few seconds and write it as a QONNX file.

16 features -> 64 -> 32 -> 32 -> 5 classes with ReLU, quantized the way HAWQ's integer-only
inference sees it: an 8-bit signed input quantizer, 6-bit narrow-range signed weights, quantized
biases at the accumulator's scale, 8-bit unsigned activations, all scales powers of two. The data are
synthetic (five Gaussian classes in 16 dimensions), made here, so the example needs no download.

    python examples/jet_tagger/make_model.py [-o examples/jet_tagger/jet_tagger.onnx]

(The HAWQ frontend will replace this hand-built export with a lifted HAWQ model.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

LAYERS = (16, 64, 32, 32, 5)
INPUT_BITS, WEIGHT_BITS, ACT_BITS, BIAS_BITS = 8, 6, 8, 16
INPUT_SCALE = 2.0**-4  # inputs are standardized features: 8 signed bits cover [-8, 7.94]
QONNX = "qonnx.custom_op.general"


def synthetic_jets(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 0.4, size=(LAYERS[-1], LAYERS[0]))  # overlapping classes: not trivial
    labels = rng.integers(0, LAYERS[-1], size=samples)
    features = centers[labels] + rng.normal(0.0, 1.0, size=(samples, LAYERS[0]))
    return features.astype(np.float32), labels


def train(features: np.ndarray, labels: np.ndarray, seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # deterministic summation order
    layers: list[torch.nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(LAYERS, LAYERS[1:])):
        layers.append(torch.nn.Linear(n_in, n_out))
        if i < len(LAYERS) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    x, y = torch.from_numpy(features), torch.from_numpy(labels)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net


def power_of_two_scale(max_abs: float, levels: int) -> float:
    """The smallest power of two s with max_abs / s <= levels (so the largest value still fits)."""
    return float(2.0 ** np.ceil(np.log2(max(max_abs, 1e-12) / levels)))


def build_qonnx(net: torch.nn.Sequential, features: np.ndarray) -> onnx.ModelProto:
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    nodes, inits = [], []

    def const(name: str, array) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def quant(name, x, scale, bits, signed, narrow) -> str:
        args = [x, const(f"{name}_scale", scale), const(f"{name}_zeropt", 0.0), const(f"{name}_bits", bits)]
        nodes.append(
            helper.make_node("Quant", args, [f"{name}_out"], name=name, domain=QONNX,
                             signed=signed, narrow=narrow, rounding_mode="ROUND")
        )  # fmt: skip
        return f"{name}_out"

    act, act_scale = quant("input_quant", "global_in", INPUT_SCALE, INPUT_BITS, 1, 0), INPUT_SCALE
    # Activation scales come from the float network's activations on the training data.
    with torch.no_grad():
        hidden = torch.from_numpy(np.clip(features, -8, 7.9375))
        for index, linear in enumerate(linears):
            name = f"fc{index + 1}"
            weight = linear.weight.detach().numpy().T  # MatMul wants [in, out]
            w_scale = power_of_two_scale(np.abs(weight).max(), 2 ** (WEIGHT_BITS - 1) - 1)
            w = quant(f"{name}_weight_quant", const(f"{name}_weight", weight), w_scale, WEIGHT_BITS, 1, 1)
            b_scale = act_scale * w_scale  # the accumulator's scale: the bias adds in exactly
            b = quant(f"{name}_bias_quant", const(f"{name}_bias", linear.bias.detach().numpy()),
                      b_scale, BIAS_BITS, 1, 0)  # fmt: skip
            nodes.append(helper.make_node("MatMul", [act, w], [f"{name}_matmul_out"], name=f"{name}_matmul"))
            nodes.append(helper.make_node("Add", [f"{name}_matmul_out", b], [f"{name}_out"], name=f"{name}_bias"))
            hidden = linear(hidden)
            if index == len(linears) - 1:
                nodes[-1].output[0] = "global_out"
                break
            hidden = torch.relu(hidden)
            nodes.append(helper.make_node("Relu", [f"{name}_out"], [f"{name}_relu_out"], name=f"{name}_relu"))
            act_scale = power_of_two_scale(float(hidden.max()), 2**ACT_BITS - 1)
            act = quant(f"{name}_act_quant", f"{name}_relu_out", act_scale, ACT_BITS, 0, 0)

    graph = helper.make_graph(
        nodes,
        "jet_tagger",
        [helper.make_tensor_value_info("global_in", TensorProto.FLOAT, [1, LAYERS[0]])],
        [helper.make_tensor_value_info("global_out", TensorProto.FLOAT, [1, LAYERS[-1]])],
        inits,
    )
    model = helper.make_model(
        graph,
        producer_name="hawqc-examples",
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)],
    )
    model.ir_version = 8  # readable by onnxruntime 1.31 (qonnx's executor)
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("jet_tagger.onnx"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    features, labels = synthetic_jets(4000, args.seed)
    net = train(features, labels, args.seed)
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(features)).argmax(1).numpy() == labels).mean()
    model = build_qonnx(net, features)
    onnx.save(model, args.output)
    print(f"wrote {args.output} (float training accuracy {accuracy:.3f})")


if __name__ == "__main__":
    main()
