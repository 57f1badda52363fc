#!/usr/bin/env bash
# Download the Python wheels scripts/gpu_check.py needs on a lent GPU machine whose image lacks them
# (Python 3.12, manylinux x86_64, no package registry there), into .whl/ (git-ignored, never committed):
#
#   bash scripts/gpu_wheels.sh            # then: carry .whl and .gpu (see scripts/gpu_check.py)
#
# The machine's image has torch, timm, peft, accelerate, safetensors, onnxruntime, numpy, pyyaml,
# psutil, ninja, einops, msgpack, py-cpuinfo, tqdm; it lacks deepspeed (+ hjson, pydantic),
# bitsandbytes, webdataset (+ braceexpand), simplejpeg and xformers. deepspeed is published as a
# source archive only: it is built here into a pure-Python wheel (its CUDA ops compile on first use
# there, with the machine's nvcc and ninja). xformers is not fetched: its wheels are built for one
# torch release (not the image's) and exceed the transfer limit; gpu_check reports it as skipped.
# What goes over the device tool's 64 MiB transfer limit is dropped and reported by gpu_check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
mkdir -p .whl
binary=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
"$PY" -m pip download -q "${binary[@]}" bitsandbytes==0.50.2 simplejpeg==1.9.0 pydantic-core==2.50.5
"$PY" -m pip download -q --no-deps -d .whl webdataset==1.0.2 braceexpand==0.1.7 hjson==3.1.0 \
    pydantic==2.14.4 annotated-types==0.8.0 typing-inspection==0.4.5
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
ls -l .whl
du -ch .whl/*.whl | tail -1
