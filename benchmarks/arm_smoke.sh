#!/bin/sh
# iplap's runtime on aarch64 under emulation: Debian's qemu-user (7.2) running an arm64
# Debian 12 root with the runtime's aarch64 wheels, one short render per backend, compared
# with the same render on this x86-64 machine (lossless, so the pixels are compared, not the
# encoder's bits). Run as root on a Debian 12 x86-64 machine from the repository's root, with
# its venv in .venv (`pip install -e ".[export]"`); about 30 minutes on 2 cores, mostly the
# emulated onnxruntime render. Results: docs/deployment.md#arm-aarch64.
set -e
REPO=$(pwd)
A=${ARM_DIR:-/tmp/iplap-arm}
VPY=$REPO/.venv/bin/python
mkdir -p "$A/numba"

# 1. qemu-user and an extracted arm64 bookworm root (no foreign dpkg architecture, no binfmt)
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static mmdebstrap
[ -x "$A/root/usr/bin/python3.11" ] || mmdebstrap --arch=arm64 --variant=extract \
  --include=python3.11,libpython3.11-stdlib,python3.11-minimal,libstdc++6,libgomp1,zlib1g,ca-certificates \
  bookworm "$A/root" http://deb.debian.org/debian
# qemu 7.2 shows the program the host's x86 /proc/cpuinfo, on which onnxruntime's CPU
# detection crashes at import (a qemu artefact: an ARM machine has its own). qemu looks up
# /proc and /sys under its -L root first, so an aarch64 one (Neoverse-N1, 2 cores) goes there.
mkdir -p "$A/root/proc"; : > "$A/root/proc/cpuinfo"
for i in 0 1; do
  printf 'processor\t: %s\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' $i >> "$A/root/proc/cpuinfo"
  d=$A/root/sys/devices/system/cpu/cpu$i/regs/identification; mkdir -p "$d"; echo 0x00000000413fd0c1 > "$d/midr_el1"
done

# 2. the runtime's aarch64 wheels at the versions this venv has, and a copy of the package
PINS=$($VPY -m pip freeze | grep -iE '^(numpy|onnxruntime|openvino|opencv-python-headless|soundfile|numba|av|tqdm)==')
PLAT="--python-version 3.11 --implementation cp --abi cp311 --only-binary=:all:"
for tag in manylinux2014 manylinux_2_17 manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux_2_35 manylinux_2_36; do
  PLAT="$PLAT --platform ${tag}_aarch64"
done
$VPY -m pip download -q $PLAT -d "$A/wheels" $PINS
$VPY -m pip install -q --no-deps --no-compile --upgrade --target "$A/site" $PLAT "$A"/wheels/*.whl
rm -rf "$A/src" && mkdir -p "$A/src/iplap"
tar --exclude=./.venv --exclude=./.git --exclude=__pycache__ --exclude=./tests -cf - . | (cd "$A/src/iplap" && tar xf -)
arm() {
  PYTHONPATH=$A/site:$A/src NUMBA_CACHE_DIR=$A/numba IPLAP_CACHE=$A/armcache QEMU_CPU=neoverse-n1 \
    qemu-aarch64-static -L "$A/root" "$A/root/usr/bin/python3.11" "$@"
}

# 3. imports and the CLI, emulated
arm -c "import platform; print('machine:', platform.machine())"
arm -m iplap --help > /dev/null && echo "iplap --help: ok"
arm -c "import numpy, onnxruntime, openvino, numba, cv2, av, soundfile; print('engines:', onnxruntime.get_available_providers(), openvino.Core().available_devices)"

# 4. stand-in bundles made here, one per format, and 0.3 s of the sample speech
$VPY -c "from iplap.models import write_standin_checkpoints; write_standin_checkpoints('$A/ckpt')"
for f in onnx openvino; do
  [ -f "$A/bundle_$f/manifest.json" ] || $REPO/.venv/bin/iplap export -q --checkpoint-dir "$A/ckpt" --out "$A/bundle_$f" --formats $f
done
$VPY -c "import soundfile as sf; x, sr = sf.read('samples/speech_16k.wav'); sf.write('$A/speech.wav', x[:int(0.3 * sr)], sr, subtype='PCM_16')"

# 5. one render per backend, natively and emulated, lossless, then compared frame by frame
for backend in onnxruntime openvino; do
  bundle=$A/bundle_onnx; [ $backend = openvino ] && bundle=$A/bundle_openvino
  args="run --bundle $bundle --face samples/astronaut.png --audio $A/speech.wav --refs 1 --threads 2 --backend $backend --crf 0 -q --json"
  rm -f "$A/x86_$backend.mp4" "$A/arm_$backend.mp4"
  IPLAP_CACHE=$A/hostcache $VPY -m iplap $args --out "$A/x86_$backend.mp4"
  arm -m iplap $args --out "$A/arm_$backend.mp4"
  $VPY - "$A/x86_$backend.mp4" "$A/arm_$backend.mp4" <<'EOF'
import sys
from pathlib import Path
import numpy as np
from iplap.metrics import psnr
from iplap.runtime.media.read import read_video_frames
a, b = (np.stack(read_video_frames(Path(p))) for p in sys.argv[1:3])
print(f"{Path(sys.argv[2]).name}: {len(b)} frames ({len(a)} natively), PSNR against x86-64 {psnr(a, b):.2f} dB, "
      f"max difference {int(np.abs(a.astype(int) - b.astype(int)).max())}")
EOF
done
