# The two commands of the README: `make demo` and `make test`. Both set up everything first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfq-installed
DEBS := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
        fortunes sox libsndfile1 cmake gcc g++ \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstdc++6-arm64-cross qemu-user \
        openjdk-17-jdk-headless shellcheck
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0

.PHONY: deps native demo test clean

$(STAMP): setup.cfg pyproject.toml Makefile tools/ensure_debs.sh
	@tools/ensure_debs.sh $(DEBS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

deps: $(STAMP)

native: deps
	@if [ -f converters/CMakeLists.txt ]; then \
	  cmake -S converters -B build/native -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	  cmake --build build/native -j2 >/dev/null; fi

demo: native
	$(PY) tools/demo.py

test: native
	$(PY) -m pytest -q -ra tests

clean:
	rm -rf build
