#!/usr/bin/env bash
# Builds and installs learn2learn 0.2.0, our comparison peer, into the given Python environment.
#
# Why a script: learn2learn's sdist ships Cython-generated C files from an old Cython that include
# `longintrepr.h`, a header Python 3.11 removed, so `pip install learn2learn` fails to compile.
# Its setup.py regenerates the C files from the .pyx sources when run with `build_ext`, so we build
# the wheel that way with a current Cython. The wheel is cached under .cache/wheels; its run-time
# needs (torch, torchvision, requests, scipy, gym) come from the `compare` extra, and we skip the
# rest of its declared requirements (gsutil, qpth), which nothing we call imports.
set -euo pipefail
py=${1:?usage: install-learn2learn.sh PYTHON}
# Absolute, because the build below runs in another folder.
case "$py" in /*) ;; *) py="$(pwd)/$py" ;; esac
version=0.2.0
sdist_sha256=69f1d7cb0d0a6be7a2c6ad8e83e2ebbe70fb05e51d61e45e63078b40c75ea419
here=$(cd "$(dirname "$0")/.." && pwd)
wheels="$here/.cache/wheels"
mkdir -p "$wheels"

if "$py" -c "import learn2learn, sys; sys.exit(learn2learn.__version__ != '$version')" 2>/dev/null; then
    exit 0
fi
wheel=$(ls "$wheels"/learn2learn-$version-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$py" -m pip download -q --no-deps --no-binary :all: "learn2learn==$version" -d "$work"
    echo "$sdist_sha256  $work/learn2learn-$version.tar.gz" | sha256sum -c --quiet
    tar -xzf "$work/learn2learn-$version.tar.gz" -C "$work"
    "$py" -m pip install -q "cython>=3" setuptools wheel
    (cd "$work/learn2learn-$version" && "$py" setup.py -q build_ext bdist_wheel -d "$wheels" >/dev/null 2>&1)
    wheel=$(ls "$wheels"/learn2learn-$version-*.whl | head -n 1)
fi
"$py" -m pip install -q --no-deps "$wheel"
"$py" -c "import learn2learn; print('learn2learn', learn2learn.__version__, 'installed')"
