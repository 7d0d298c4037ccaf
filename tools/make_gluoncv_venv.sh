#!/usr/bin/env bash
# Make the GluonCV 0.10.5 reference virtualenv that the fixture tools (tools/make_*_fixtures.py) and the
# benchmarks' GluonCV columns run under. It is never a dependency of ssdkit.
#
#   tools/make_gluoncv_venv.sh [DIR]      # DIR defaults to .venv-gluoncv at the repository root (git-ignored)
#
# The benchmarks find it there, or wherever SSDKIT_GLUONCV_PYTHON points (a python executable).
# MXNet 1.9.1 has wheels for Python 3.7-3.11 on x86-64 Linux; set PYTHON to pick the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-.venv-gluoncv}"
"${PYTHON:-python3}" -m venv "$dir"
"$dir/bin/python" -m pip install --upgrade pip
"$dir/bin/python" -m pip install numpy==1.23.5 mxnet==1.9.1
# gluoncv's own requirements would upgrade numpy: pin it again in the same install
"$dir/bin/python" -m pip install gluoncv==0.10.5.post0 numpy==1.23.5
# pycocotools lets tools/make_metric_fixtures.py write tests/data/metric_coco.npz too (optional)
"$dir/bin/python" -m pip install "pycocotools<2.0.8" numpy==1.23.5 || echo "pycocotools not installed: metric_coco.npz will not be regenerated"
"$dir/bin/python" -c "import gluoncv, mxnet, numpy; print('gluoncv', gluoncv.__version__, 'mxnet', mxnet.__version__, 'numpy', numpy.__version__)"
echo "GluonCV python: $dir/bin/python"
