#!/usr/bin/env bash
# DiffusionVL-Qwen2.5-7B on this machine, with the real shapes (Qwen2.5-7B + siglip2-so400m, random bf16,
# ~16 GB, written once under .tmp/bench, never committed): conversion time and peak RSS, then `dvl ask` time
# per stage and peak RSS for one 1920x1080 photo at the default (anyres_max_4: base + 5x3 tiles) and at the
# cheapest setting (--image-mode pad: one crop). Not a test; prints what it measured.
#   bash scripts/measure-siglip-7b.sh [dtype]     (default int4)
set -euo pipefail
cd "$(dirname "$0")/.."
DTYPE=${1:-int4}
BENCH=.tmp/bench
CKPT=$BENCH/synthetic-siglip-7b
IMAGE=$BENCH/images/photo-1920x1080.jpg
export DVL_HOME=$PWD/$BENCH/home CI=1
mkdir -p "$BENCH/images"
if [ ! -f "$CKPT/config.json" ]; then
  echo "writing $CKPT (once)"
  /usr/bin/time -f 'written in %e s, peak RSS %M KB' npx tsx -e "import('./test/helpers/tiny-siglip.ts').then((m) => m.writeSyntheticSiglip7b('$CKPT', 7))"
fi
[ -f "$IMAGE" ] || node -e "require('sharp')('$BENCH/images/photo-4000x3000.jpg').resize(1920, 1080, { fit: 'fill' }).jpeg({ quality: 90 }).toFile('$IMAGE')"
echo "== dvl pull $CKPT --dtype $DTYPE"
/usr/bin/time -f 'pull: %e s wall, peak RSS %M KB' node bin/dvl.js pull "$CKPT" --dtype "$DTYPE" --quiet
for mode in anyres pad; do
  echo "== dvl ask --image-mode $mode (1920x1080, 128 tokens, 8 steps)"
  /usr/bin/time -f "ask $mode: %e s wall, peak RSS %M KB" node bin/dvl.js ask -m "$CKPT" --dtype "$DTYPE" --image-mode "$mode" -n 128 --verbose -q "$IMAGE" "Describe this image." > /dev/null
done
