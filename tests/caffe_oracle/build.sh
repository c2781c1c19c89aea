#!/usr/bin/env bash
# Build BVLC Caffe (CPU, pycaffe, Python layers) as the test oracle of the `caffe` tier.
#
#   bash tests/caffe_oracle/build.sh
#
# Source: $FCN_CAFFE_SOURCE (a BVLC Caffe source tree or its .tar.gz), else the tarball in
# ../shared/caffe/ beside the checkout. Result: $FCN_CAFFE_HOME (default
# ${XDG_CACHE_HOME:-~/.cache}/fcn-faithfully/caffe-<source key>) with build/ (libcaffe, pycaffe) and
# venv/ (Caffe's own Python: numpy<2, the protobuf that matches protoc). A finished build leaves
# a `ready` stamp and a second run does nothing. Prints the prefix as its last line.
#
# Two changes for today's toolchain, made on the unpacked copy (the source is left as it is):
# protobuf 3.21 has only the one-argument CodedInputStream::SetTotalBytesLimit, and
# python/caffe/io.py imports scikit-image at import time (only its image helpers use it).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source_path="${FCN_CAFFE_SOURCE:-$repo/../shared/caffe/caffe-9b89154.tar.gz}"
if [ ! -e "$source_path" ]; then
    echo "error: no Caffe source at $source_path; set FCN_CAFFE_SOURCE to a BVLC Caffe source tree or" \
        "its .tar.gz (https://github.com/BVLC/caffe, commit 9b89154 is the one tested)" >&2
    exit 1
fi
source_path="$(cd "$(dirname "$source_path")" && pwd)/$(basename "$source_path")"

# The cache key names the source: the tarball's sha256, or the tree's git commit / path.
if [ -f "$source_path" ]; then
    key="$(sha256sum "$source_path" | cut -c1-12)"
elif git -C "$source_path" rev-parse HEAD >/dev/null 2>&1; then
    key="git-$(git -C "$source_path" rev-parse --short=12 HEAD)"
else
    key="tree-$(printf '%s' "$source_path" | sha256sum | cut -c1-12)"
fi
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/fcn-faithfully"
prefix="${FCN_CAFFE_HOME:-$cache_root/caffe-$key}"

if [ -f "$prefix/ready" ]; then
    echo "Caffe already built from $source_path" >&2
    echo "$prefix"
    exit 0
fi

packages=(build-essential cmake pkg-config python3-dev python3-venv libboost-system-dev libboost-thread-dev
    libboost-filesystem-dev libboost-python-dev libprotobuf-dev protobuf-compiler libgoogle-glog-dev
    libgflags-dev libhdf5-dev libopenblas-dev)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: Caffe's build needs these Debian packages: ${missing[*]} (apt-get install them as root)" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

rm -rf "$prefix"
mkdir -p "$prefix"
src="$prefix/src"
if [ -f "$source_path" ]; then
    mkdir -p "$src"
    tar xzf "$source_path" -C "$src" --strip-components=1
else
    cp -a "$source_path" "$src"
fi

python3 - "$src" <<'PY'
import sys
from pathlib import Path

src = Path(sys.argv[1])
io_cpp = src / "src/caffe/util/io.cpp"
text = io_cpp.read_text()
text = text.replace("SetTotalBytesLimit(kProtoReadBytesLimit, 536870912)", "SetTotalBytesLimit(kProtoReadBytesLimit)")
io_cpp.write_text(text)
io_py = src / "python/caffe/io.py"
text = io_py.read_text()
old = "import skimage.io\nfrom scipy.ndimage import zoom\nfrom skimage.transform import resize\n"
new = (
    "from scipy.ndimage import zoom\n"
    "try:  # only load_image and resize_image use scikit-image\n"
    "    import skimage.io\n"
    "    from skimage.transform import resize\n"
    "except ImportError:\n"
    "    pass\n"
)
if old in text:
    io_py.write_text(text.replace(old, new))
PY

# Caffe's Python: the system interpreter its extension is built against, numpy<2 for the C API, six (pycaffe imports it),
# the protobuf runtime that matches protoc, and what the authors' data layers import.
protobuf_version="$(protoc --version | awk '{print $2}')"
python_protobuf="4.${protobuf_version#3.}"
/usr/bin/python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install --quiet --disable-pip-version-check -c "$here/constraints.txt" \
    numpy "protobuf==$python_protobuf" scipy pillow six

cmake -S "$src" -B "$prefix/build" -DCMAKE_BUILD_TYPE=Release -DCPU_ONLY=ON -DUSE_OPENCV=OFF \
    -DUSE_LEVELDB=OFF -DUSE_LMDB=OFF -DBUILD_python=ON -Dpython_version=3 -DBUILD_python_layer=ON \
    -DBUILD_docs=OFF -DBLAS=Open -DCMAKE_CXX_STANDARD=14 \
    -DPYTHON_EXECUTABLE="$prefix/venv/bin/python" >"$prefix/cmake.log" 2>&1 ||
    { tail -30 "$prefix/cmake.log" >&2; exit 1; }
make -C "$prefix/build" -j"$(nproc)" pycaffe >"$prefix/make.log" 2>&1 ||
    { tail -30 "$prefix/make.log" >&2; exit 1; }

# The pycaffe package with its extension, as `make pycaffe` lays it out in the source tree.
PYTHONPATH="$src/python" LD_LIBRARY_PATH="$prefix/build/lib" GLOG_minloglevel=2 \
    "$prefix/venv/bin/python" -c "import caffe; caffe.set_mode_cpu()"
printf '%s\n' "$source_path" >"$prefix/ready"
echo "Caffe built in $prefix" >&2
echo "$prefix"
