"""Depth: inspect, convert, save, load and codegen a generated chain of N Caffe layers
(Convolution 1x1 / ReLU / Eltwise SUM blocks, tiny channels), timed per stage.

    .venv/bin/python bench/bench_depth.py 1000 5000 20000 [--stages inspect,convert,...]

Figures in BENCHMARKS.md ("Depth").
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings


def deep_chain(layers: int, channels: int = 2, size: int = 4) -> str:
    """A prototxt of ``layers`` layers: blocks of conv 1x1 -> ReLU (in place) -> Eltwise
    SUM with the block's input, so every block has a skip connection."""
    out = [(f'name: "chain{layers}"\ninput: "data"\n'
           f"input_shape {{ dim: 1 dim: {channels} dim: {size} dim: {size} }}\n")]
    prev, i = "data", 0
    while i < layers:
        k = i // 3
        conv, add = f"conv{k}", f"add{k}"
        out.append(f'layer {{ name: "{conv}" type: "Convolution" bottom: "{prev}" '
                   f'top: "{conv}" convolution_param {{ num_output: {channels} '
                   f'kernel_size: 1 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}\n')
        i += 1
        if i < layers:
            out.append(f'layer {{ name: "relu{k}" type: "ReLU" bottom: "{conv}" '
                       f'top: "{conv}" }}\n')
            i += 1
        if i < layers:
            out.append(f'layer {{ name: "{add}" type: "Eltwise" bottom: "{conv}" '
                       f'bottom: "{prev}" top: "{add}" }}\n')
            i += 1
            prev = add
        else:
            prev = conv
    return "".join(out)


def _now():
    return time.perf_counter(), time.process_time()


def _since(t):
    return time.perf_counter() - t[0], time.process_time() - t[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 5000, 20000])
    ap.add_argument("--stages", default="inspect,convert,save,load,codegen")
    args = ap.parse_args(argv)
    stages = args.stages.split(",")

    import caffe2keras
    from caffe2keras.inspect import describe, format_table

    # inspect first, before Keras is imported (the command never imports it; the garbage
    # collector's passes over Keras's objects would be counted otherwise)
    inspected = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in [3, *args.sizes] if "inspect" in stages else []:
            proto = os.path.join(tmp, f"chain{n}.prototxt")
            with open(proto, "w") as f:
                f.write(deep_chain(n))
            t = _now()
            format_table(describe(caffe2keras.load_graph(proto)))
            inspected[n] = _since(t)
    if any(s != "inspect" for s in stages):
        from caffe2keras.codegen import write_python
        from caffe2keras.saving import save_model

        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # imports and first calls out of the figures
            proto = os.path.join(tmp, "warm.prototxt")
            with open(proto, "w") as f:
                f.write(deep_chain(3))
            model = caffe2keras.convert(proto, seed=0)
            save_model(model, os.path.join(tmp, "warm.keras"))
            caffe2keras.load_model(os.path.join(tmp, "warm.keras"))
            write_python(proto, os.path.join(tmp, "warm.py"))
    print(f"{'layers':>7} " + " ".join(f"{s:>15}" for s in stages)
          + "   (seconds: wall / CPU of this process)", flush=True)
    for n in args.sizes:
        row = {}
        with tempfile.TemporaryDirectory() as tmp:
            proto = os.path.join(tmp, "chain.prototxt")
            with open(proto, "w") as f:
                f.write(deep_chain(n))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if n in inspected:
                    row["inspect"] = inspected[n]
                model = None
                if "convert" in stages:
                    t = _now()
                    model = caffe2keras.convert(proto, seed=0)
                    row["convert"] = _since(t)
                path = os.path.join(tmp, "chain.keras")
                if "save" in stages and model is not None:
                    t = _now()
                    save_model(model, path)
                    row["save"] = _since(t)
                if "load" in stages and os.path.exists(path):
                    t = _now()
                    caffe2keras.load_model(path)
                    row["load"] = _since(t)
                if "codegen" in stages:
                    t = _now()
                    write_python(proto, os.path.join(tmp, "chain.py"))
                    row["codegen"] = _since(t)
        print(f"{n:>7} " + " ".join(f"{row[s][0]:7.2f} /{row[s][1]:6.2f}" if s in row
                                    else f"{'-':>15}" for s in stages), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
