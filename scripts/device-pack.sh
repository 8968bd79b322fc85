#!/bin/sh
# Packs what a device run needs beside the tracked tree into one small file,
# .device/bins.tar.xz (git-ignored; name it in the device tool's `carry`):
# build-cuda/v4serve and build-cuda/gpu-tests without host debug info, an
# optional baseline binary (BASE=path: unpacked as build-cuda-base/v4serve),
# and the shared libraries v4serve links that the device image may lack
# (libmicrohttpd was missing there on 2026-12-06), unpacked into .device/lib.
# Why: the tracked tree (golden models) is ~53 MiB of the 64 MiB a call may
# carry, and the binaries' kernels compress well (xz -9e: ~9.4 MB in all).
# Built with NVCCFLAGS="-O2 -g -lineinfo -no-compress" (fatbins left for xz
# to compress, which then also finds what two binaries share), three
# binaries pack into 7.8 MB against 11.8 MB for two of the default build.
# On the device:
#   tar -xJf .device/bins.tar.xz && export LD_LIBRARY_PATH=$PWD/.device/lib
set -eu
cd "$(dirname "$0")/.."
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/build-cuda" "$T/.device/lib" .device
for b in v4serve gpu-tests; do
    cp "build-cuda/$b" "$T/build-cuda/$b"
    strip --strip-debug "$T/build-cuda/$b"
done
if [ -n "${BASE:-}" ]; then
    mkdir -p "$T/build-cuda-base"
    cp "$BASE" "$T/build-cuda-base/v4serve"
    strip --strip-debug "$T/build-cuda-base/v4serve"
fi
# every library outside the C/C++ runtime, which the device has
ldd build-cuda/v4serve | awk '$3 ~ /^\// {print $3}' |
    grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|libpthread|libdl|librt)\.so' |
    while read -r l; do cp -L "$l" "$T/.device/lib/"; done
(cd "$T" && tar -cf - build-cuda .device/lib $([ -d build-cuda-base ] && echo build-cuda-base)) |
    xz -9e -T2 >.device/bins.tar.xz
ls -l .device/bins.tar.xz
