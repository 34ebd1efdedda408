#!/bin/sh
# The MicroPython unix port built 32-bit (gcc -m32: 4-byte words and pointers, 16-byte GC blocks, as on
# an ESP32 or RP2040), twice, for bench/wallet_heap32.py:
#   build/mp32/plain/micropython    nothing of ours frozen: the wallet loads its .mpy set from the flash
#   build/mp32/frozen/micropython   firmware/manifest.py (AMIKO_BOARD=VIRTUAL) frozen into the binary
# plus build/mp32/mpy-cross next to each. Source: MICROPYTHON_SRC (a checkout of MICROPYTHON_TAG), else a
# shallow git clone into build/micropython-$TAG. Needs gcc-multilib (apt-get install gcc-multilib).
# Each build takes a few minutes on 2 cores; a binary that exists is not rebuilt unless the frozen
# sources changed (make's own dependency tracking).
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TAG=${MICROPYTHON_TAG:-v1.28.0}
SRC=${MICROPYTHON_SRC:-$ROOT/build/micropython-$TAG}
OUT=$ROOT/build/mp32
JOBS=${JOBS:-2}
if [ ! -f "$SRC/py/mpconfig.h" ]; then
    git clone --quiet --depth 1 --branch "$TAG" https://github.com/micropython/micropython "$SRC"
fi
# no submodules needed: btree, ssl and ffi are off (the firmware uses none of them) and the manifest
# requires nothing from micropython-lib (the build only checks that its README exists)
mkdir -p "$OUT/no-micropython-lib"
touch "$OUT/no-micropython-lib/README.md"
FLAGS="MICROPY_FORCE_32BIT=1 MICROPY_PY_BTREE=0 MICROPY_PY_SSL=0 MICROPY_PY_FFI=0 MICROPY_STANDALONE=0"
FLAGS="$FLAGS MPY_LIB_DIR=$OUT/no-micropython-lib"
make -s -C "$SRC/mpy-cross" -j"$JOBS" >/dev/null
for kind in plain frozen; do
    if [ $kind = frozen ]; then manifest=$ROOT/firmware/manifest.py; else manifest=; fi
    AMIKO_BOARD=VIRTUAL make -s -C "$SRC/ports/unix" -j"$JOBS" $FLAGS BUILD="$OUT/obj-$kind" FROZEN_MANIFEST="$manifest" >/dev/null
    mkdir -p "$OUT/$kind"
    cp "$OUT/obj-$kind/micropython" "$OUT/$kind/micropython"
    cp "$SRC/mpy-cross/build/mpy-cross" "$OUT/$kind/mpy-cross"
done
"$OUT/frozen/micropython" -c "import sys; print(sys.implementation)"
