"""deepbet's two networks (its wheel's TorchScript files) as ONNX files in
`src/brainuad/weights/deepbet/`, so that `segment` and `compare` outline the brain with
onnxruntime and never import torch (1.3-1.5 s of every process's start on a 2-core machine:
docs/speed.md). Run once per deepbet release; it needs torch, deepbet and onnx
(`pip install -e ".[export]"`). Each network's last step, a softmax over its two channels, is
left out (onnxruntime took 0.55 s for it at 192^3, more than all the convolutions):
`brain_mask.brain_probability` takes the softmax of the logits itself. `export.json` records
what was converted and the largest difference of each file's brain probability from deepbet's
own on a random input.

    python scripts/export_deepbet.py [--out src/brainuad/weights/deepbet]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from deepbet.utils import DATA_PATH

from brainuad.preprocessing.brain_mask import (
    BOX_SIZE,
    DEEPBET,
    NETWORK_SIZE,
    NETWORKS,
    brain_softmax,
)

ROOT = Path(__file__).resolve().parents[1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_softmax(path: Path) -> None:
    """The ONNX file at `path` with its last node, the softmax, left out: its output the logits."""
    model = onnx.load(path)
    last = model.graph.node[-1]
    axis = [onnx.helper.get_attribute_value(a) for a in last.attribute if a.name == "axis"]
    if last.op_type != "Softmax" or axis != [1] or len(model.graph.output) != 1:
        raise SystemExit(f"{path}: expected one output from a softmax over the channels, found "
                         f"{last.op_type} {axis}")
    model.graph.node.remove(last)
    for node in model.graph.node:
        node.output[:] = ["logits" if name == last.input[0] else name for name in node.output]
    model.graph.output[0].name = "logits"
    onnx.checker.check_model(model)
    onnx.save(model, path)


def export(source: Path, target: Path, size: int) -> float:
    """`source` as ONNX at `target` (any cube size, no softmax); the largest difference of its
    brain probability in onnxruntime from TorchScript's on a random cube of `size` voxels a
    side."""
    network = torch.jit.load(source, map_location="cpu").eval()
    example = torch.rand(1, 1, size, size, size, generator=torch.Generator().manual_seed(0))
    axes = {2: "x", 3: "y", 4: "z"}
    tmp = target.with_name(target.name + ".tmp")
    torch.onnx.export(network, (example,), tmp, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["probability"],
                      dynamic_axes={"image": axes, "probability": axes})
    without_softmax(tmp)
    session = onnxruntime.InferenceSession(tmp, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = network(example).numpy()[0, 1]
    got = brain_softmax(session.run(None, {"image": example.numpy()})[0])
    difference = float(np.abs(got - expected).max())
    if difference > 0.01:  # measured 1.3e-3 and 1.5e-3: the two runtimes' float rounding
        tmp.unlink()
        raise SystemExit(f"{source}: onnxruntime's brain probability differs from TorchScript's "
                         f"by {difference:.3g}; not written")
    tmp.replace(target)
    return difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEEPBET)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    record: dict = {"deepbet": importlib.metadata.version("deepbet"),
                    "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                    "files": {}}
    for name, size in zip(NETWORKS, (BOX_SIZE, NETWORK_SIZE), strict=True):
        source = Path(DATA_PATH) / "models" / f"{Path(name).stem}.pt"
        difference = export(source, args.out / name, size)
        record["files"][name] = {"from": source.name, "from_sha256": sha256(source),
                                 "sha256": sha256(args.out / name),
                                 "max_difference_on_random_input": difference}
        print(f"{name}: from {source.name}, largest difference {difference:.2e}")
    licence = next(f for f in importlib.metadata.files("deepbet") or [] if f.name == "LICENSE")
    shutil.copyfile(Path(str(licence.locate())), args.out / "LICENSE")
    (args.out / "export.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
