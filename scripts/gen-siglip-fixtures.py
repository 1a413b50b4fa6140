#!/usr/bin/python3
"""Regenerate the expected values of the SigLIP (DiffusionVL-Qwen) preprocessing tests (dev-time only; tests
never run this).

A Python rendering of the reference pipeline described in docs diffusionvl-qwen.md §2, written from the
public sources (hustvl/DiffusionVL `train/llava/mm_utils.py`: select_best_resolution, resize_and_pad_image,
divide_to_patches, process_anyres_image, expand2square; `siglip_encoder.py`: SigLipImageProcessor, whose
resize / rescale / normalize are transformers' `image_transforms` functions), on Debian's python3-pil
(Pillow 9.4) and python3-numpy:

    apt-get install -y python3-pil python3-numpy
    /usr/bin/python3 scripts/gen-siglip-fixtures.py

Inputs: the photos in fixtures/images plus images derived from them by cropping and tiling (the tests derive
them the same way). Output: fixtures/preprocess/siglip-expected.json, with crops stored as the sha256 of their
RGB bytes (and of their normalised float32 little-endian CHW values) plus a few sample values, so that a
failing test can still say where it differs.
"""
import hashlib
import json
import math
import os
import re

import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(ROOT, "fixtures", "images")
OUT = os.path.join(ROOT, "fixtures", "preprocess", "siglip-expected.json")

S = 384  # SigLipImageProcessor: size (384, 384), crop_size 384x384
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
PAD_FILL = tuple(int(x * 255) for x in MEAN)  # (127, 127, 127)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------- reference


def expand_pinpoints(text, patch_size=S):
    """The "(AxB),...,(CxD)" form: ranges from the first and last groups, i outer, j inner, times the crop size."""
    groups = re.findall(r"\((\d+)x(\d+)\)", text)
    (a0, b0), (a1, b1) = map(int, groups[0]), map(int, groups[-1])
    return [[i * patch_size, j * patch_size] for i in range(a0, a1 + 1) for j in range(b0, b1 + 1)]


DEFAULT_PINPOINTS = expand_pinpoints("(1x1),...,(6x6)")


def select_best_resolution(size, pinpoints):
    w, h = size
    best, max_eff, min_waste = None, 0, float("inf")
    for pw, ph in pinpoints:
        scale = min(pw / w, ph / h)
        dw, dh = int(w * scale), int(h * scale)
        eff = min(dw * dh, w * h)
        waste = pw * ph - eff
        if eff > max_eff or (eff == max_eff and waste < min_waste):
            best, max_eff, min_waste = (pw, ph), eff, waste
    return best


def pad_layout(size, target):
    w, h = size
    tw, th = target
    sw, sh = tw / w, th / h
    if sw < sh:
        nw, nh = tw, min(math.ceil(h * sw), th)
    else:
        nw, nh = min(math.ceil(w * sh), tw), th
    return nw, nh, (tw - nw) // 2, (th - nh) // 2


def resize_default(image, size):
    """`image.resize(size)` as mm_utils calls it: Pillow's default filter, which is BICUBIC for RGB (Pillow >= 7)."""
    out = image.resize(size)
    assert out.tobytes() == image.resize(size, Image.BICUBIC).tobytes()
    return out


def anyres_crops(image, pinpoints):
    best = select_best_resolution(image.size, pinpoints)
    nw, nh, x, y = pad_layout(image.size, best)
    canvas = Image.new("RGB", best, (0, 0, 0))
    canvas.paste(resize_default(image, (nw, nh)), (x, y))
    tiles = []
    for top in range(0, best[1], S):
        for left in range(0, best[0], S):
            tiles.append(canvas.crop((left, top, left + S, top + S)))
    base = resize_default(image, (S, S))
    return best, (nw, nh, x, y), [base] + tiles


def expand2square(image, fill):
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new(image.mode, (side, side), fill)
    out.paste(image, (0, (w - h) // 2) if w > h else ((h - w) // 2, 0))
    return out


def pad_crop(image):
    return expand2square(image, PAD_FILL).resize((S, S), Image.BICUBIC)


def processor(crop):
    """SigLipImageProcessor.preprocess on one RGB crop: transformers' resize (PIL BICUBIC, uint8 in and out, to
    channels first), rescale (float64 product, cast to float32), normalize (float32 (x - mean) / std)."""
    a = np.asarray(crop.convert("RGB"))
    resized = np.array(Image.fromarray(a).resize((S, S), resample=Image.BICUBIC, reducing_gap=None))
    if crop.size == (S, S):
        assert resized.tobytes() == a.tobytes()  # the processor's resize is a no-op on S x S crops
    chw = resized.transpose(2, 0, 1)
    x = (chw.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = ((x.T - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)).T
    assert x.dtype == np.float32
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------------------------- cases


def decode(name):
    """PIL convert("RGB") (plus EXIF orientation, as dvl's decodeImage; these photos have none)."""
    return ImageOps.exif_transpose(Image.open(os.path.join(IMAGES, name))).convert("RGB")


# Sources: {"file"} or a file plus {"crop": [left, top, right, bottom]} (PIL box) or {"tile": [nx, ny]}
# (numpy tile: the picture repeated nx times across and ny times down). The test derives them the same way.
SOURCES = {
    "chelsea": {"file": "chelsea.png"},  # 451x300, landscape
    "coffee": {"file": "coffee.jpg"},  # 600x400
    "astronaut": {"file": "astronaut-256.png"},  # 256x256, square, upscaled
    "wide": {"file": "chelsea.png", "crop": [0, 120, 451, 150]},  # 451x30: padded top and bottom
    "tall": {"file": "coffee.jpg", "crop": [250, 0, 290, 400]},  # 40x400: padded left and right
    "tiny": {"file": "astronaut-256.png", "crop": [100, 100, 107, 103]},  # 7x3
    "tiled": {"file": "chelsea.png", "tile": [3, 2]},  # 1353x600: several tile rows, downscaled
    "tall-tiled": {"file": "coffee.jpg", "crop": [0, 0, 301, 400], "tile": [1, 3]},  # 301x1200
}

ANYRES_CASES = ["chelsea", "coffee", "astronaut", "wide", "tall", "tiny", "tiled", "tall-tiled"]
PAD_CASES = ["chelsea", "coffee", "astronaut", "wide", "tall", "tiny", "tall-tiled"]


def source(name):
    spec = SOURCES[name]
    img = decode(spec["file"])
    if "crop" in spec:
        img = img.crop(tuple(spec["crop"]))
    if "tile" in spec:
        nx, ny = spec["tile"]
        img = Image.fromarray(np.tile(np.asarray(img), (ny, nx, 1)), "RGB")
    return img


def rgb_samples(img, count=8):
    a = np.asarray(img)
    h, w = a.shape[:2]
    spots = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, h // 2)]
    spots += [((i * 7919) % w, (i * 104729) % h) for i in range(1, count - len(spots) + 1)]
    return [[x, y, *map(int, a[y, x])] for x, y in spots]


def float_samples(chw, count=8):
    c, h, w = chw.shape
    spots = [(0, 0, 0), (2, h - 1, w - 1), (1, h // 2, w // 2)]
    spots += [(i % c, (i * 7919) % h, (i * 104729) % w) for i in range(1, count - len(spots) + 1)]
    return [[k, y, x, float(chw[k, y, x])] for k, y, x in spots]


def crop_entry(crop):
    chw = processor(crop)
    return {
        "sha256": sha256(crop.tobytes()),
        "samples": rgb_samples(crop),
        "normalized": {"sha256": sha256(chw.astype("<f4").tobytes()), "samples": float_samples(chw)},
    }


def best_resolution_cases():
    """(width, height, pinpoint set) for the select_best_resolution / resize_and_pad table."""
    sizes = [(10, 10), (385, 384), (5000, 30), (1920, 1080), (3000, 3000), (1, 1), (1, 10000), (10000, 1),
             (47, 47), (47, 1000), (383, 384), (384, 384), (768, 384), (769, 385), (2304, 2304), (2305, 2304),
             (100000, 7), (535, 536), (451, 300), (600, 400), (256, 256)]
    cases = [(w, h, "default") for w, h in sizes]
    rng = np.random.default_rng(20250101)
    for _ in range(300):
        w, h = (int(v) for v in rng.integers(1, 6000, 2))
        cases.append((w, h, "default"))
    for _ in range(100):  # very elongated
        long, short = int(rng.integers(500, 20000)), int(rng.integers(1, 60))
        cases.append((long, short, "default") if rng.integers(2) else (short, long, "default"))
    for _ in range(150):
        w, h = (int(v) for v in rng.integers(1, 4000, 2))
        cases.append((w, h, "shuffled"))
    cases += [(535, 536, "trap"), (535, 536, "trap-reversed"), (10, 10, "ties"), (10, 10, "ties-reversed")]
    return cases


def pinpoint_sets():
    rng = np.random.default_rng(7)
    shuffled = [DEFAULT_PINPOINTS[i] for i in rng.permutation(len(DEFAULT_PINPOINTS))]
    return {
        "default": DEFAULT_PINPOINTS,
        "shuffled": shuffled,
        # trunc(535 * (384 / 535)) = 383 makes [384, 768] tie with [384, 384] on effective resolution, so the
        # smaller waste wins; exact arithmetic would pick [384, 768].
        "trap": [[384, 768], [384, 384]],
        "trap-reversed": [[384, 384], [384, 768]],
        # 10x10 has effective 100 everywhere and equal waste for both: the earlier one wins.
        "ties": [[768, 384], [384, 768]],
        "ties-reversed": [[384, 768], [768, 384]],
    }


PINPOINT_STRINGS = ["(1x1),...,(6x6)", "(1x1),(2x2),(3x3),(4x4),(5x5),(6x6)", "(2x1),(9x9),(3x3)", "(1x2)"]


def main():
    expected = {"pillow": Image.__version__, "numpy": np.__version__, "cropSize": S, "sources": SOURCES,
                "pinpointStrings": [[s, expand_pinpoints(s)] for s in PINPOINT_STRINGS]}
    sets = pinpoint_sets()
    expected["pinpointSets"] = sets
    table = []
    for w, h, set_name in best_resolution_cases():
        best = select_best_resolution((w, h), sets[set_name])
        table.append([w, h, set_name, *best, *pad_layout((w, h), best)])
    expected["bestResolution"] = table

    anyres = []
    for name in ANYRES_CASES:
        img = source(name)
        best, (nw, nh, x, y), crops = anyres_crops(img, DEFAULT_PINPOINTS)
        anyres.append({
            "source": name, "width": img.width, "height": img.height, "sha256": sha256(img.tobytes()),
            "best": list(best), "grid": [best[0] // S, best[1] // S], "layout": [nw, nh, x, y],
            "crops": [crop_entry(c) for c in crops],
        })
    expected["anyres"] = anyres

    pad = []
    for name in PAD_CASES:
        img = source(name)
        w, h = img.size
        side = max(w, h)
        offset = [0, 0] if w == h else ([0, (w - h) // 2] if w > h else [(h - w) // 2, 0])
        pad.append({"source": name, "width": w, "height": h, "side": side, "offset": offset,
                    "crop": crop_entry(pad_crop(img))})
    expected["pad"] = pad

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
