#!/usr/bin/python3
"""Regenerate the expected values of the image preprocessing tests (dev-time only; tests never run this).

Reference: Debian's python3-pil (Pillow 9.4) and python3-numpy, i.e. what the Qwen2-VL image processor of
transformers uses under the hood (`Image.open(...).convert("RGB")`, `Image.resize(..., BICUBIC)`, numpy
float math). Run with Debian's interpreter, which has them:

    /usr/bin/python3 scripts/gen-preprocess-fixtures.py                 # expected values only
    /usr/bin/python3 scripts/gen-preprocess-fixtures.py --make-images DIR  # also rebuild fixtures/images

DIR is the `skimage/data` folder of Debian's python3-skimage package, e.g. after
`apt-get download python3-skimage && dpkg -x python3-skimage_*.deb x`:
x/usr/lib/python3/dist-packages/skimage/data

If `transformers` is importable (it is not needed), the script also checks its own float pipeline and its
smart_resize against transformers' Qwen2VLImageProcessor and smart_resize, and stops on any difference.

Output: fixtures/preprocess/expected.json. Large outputs are stored as the sha256 of their bytes plus a
few sample values, so a failing test can still say where it differs.
"""
import argparse
import hashlib
import io
import json
import math
import os
import shutil
import struct
import sys
import zlib

import numpy as np
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(ROOT, "fixtures", "images")
OUT = os.path.join(ROOT, "fixtures", "preprocess", "expected.json")

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
DEFAULT_MIN, DEFAULT_MAX = 384 * 384, 512 * 512


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------- images


def write_png16_rgb(path, rgb16):
    """Pillow cannot write 16-bit RGB PNGs: a minimal writer (filter 0 rows, big-endian samples)."""
    h, w, _ = rgb16.shape

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def make_images(skimage_data):
    os.makedirs(IMAGES, exist_ok=True)
    # Real photos. chelsea stays byte-identical (native size, with its embedded ICC profile).
    shutil.copyfile(os.path.join(skimage_data, "chelsea.png"), os.path.join(IMAGES, "chelsea.png"))
    coffee = Image.open(os.path.join(skimage_data, "coffee.png")).convert("RGB")
    coffee.save(os.path.join(IMAGES, "coffee.jpg"), quality=90)  # native size, 4:2:0 chroma subsampling
    astronaut = Image.open(os.path.join(skimage_data, "astronaut.png")).convert("RGB")
    astronaut.resize((256, 256), Image.LANCZOS).save(os.path.join(IMAGES, "astronaut-256.png"), optimize=True)

    # Small derived images, one per decoding path. Odd sizes on purpose.
    chelsea = Image.open(os.path.join(IMAGES, "chelsea.png")).convert("RGB")
    small = chelsea.resize((67, 45), Image.BICUBIC)
    a = np.array(small)
    h, w = a.shape[:2]
    ramp = (np.arange(w)[None, :] * 255 // (w - 1)).repeat(h, 0).astype(np.uint8)
    Image.fromarray(np.dstack([a, ramp]), "RGBA").save(os.path.join(IMAGES, "rgba.png"))
    Image.fromarray(a[:, :, 1], "L").save(os.path.join(IMAGES, "gray.png"))
    Image.fromarray(np.dstack([a[:, :, 1], ramp]), "LA").save(os.path.join(IMAGES, "gray-alpha.png"))
    noise = (np.arange(h * w).reshape(h, w) * 7919) % 257
    noise %= 256
    grey16 = (a[:, :, 0].astype(np.uint32) * 257 + noise).astype(np.uint16)  # many values > 255
    Image.fromarray(grey16, "I;16").save(os.path.join(IMAGES, "gray16.png"))
    write_png16_rgb(os.path.join(IMAGES, "rgb16.png"), a.astype(np.uint32) * 257 + noise[:, :, None])
    pal = small.convert("P", palette=Image.ADAPTIVE, colors=32)
    pal.save(os.path.join(IMAGES, "palette-trns.png"), transparency=3)
    small.convert("1").save(os.path.join(IMAGES, "bilevel.png"))
    small.convert("CMYK").save(os.path.join(IMAGES, "cmyk.jpg"), quality=90)
    small.save(os.path.join(IMAGES, "small.webp"), quality=90)
    # Animated GIF: frame 0 has a transparent index, frame 1 is a different picture.
    f0 = small.convert("P", palette=Image.ADAPTIVE, colors=16)
    f1 = coffee.resize((67, 45), Image.BICUBIC).convert("P", palette=Image.ADAPTIVE, colors=16)
    f0.save(os.path.join(IMAGES, "anim.gif"), save_all=True, append_images=[f1], duration=100, loop=0, transparency=0)
    # EXIF orientation 6 (rotate 90 degrees clockwise to display) and 5 (transpose: mirror + rotate).
    for orientation in (5, 6):
        exif = Image.Exif()
        exif[0x0112] = orientation
        coffee.resize((60, 36), Image.BICUBIC).save(
            os.path.join(IMAGES, f"orient{orientation}.jpg"), quality=95, exif=exif.tobytes()
        )
    # Junk bytes before a marker: libjpeg only warns ("extraneous bytes before marker") and PIL decodes it.
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    at = data.index(b"\xff\xc4")  # first Huffman table
    with open(os.path.join(IMAGES, "junk-bytes.jpg"), "wb") as f:
        f.write(data[:at] + b"\x01\x02\x03" + data[at:])
    with open(os.path.join(IMAGES, "coffee.jpg"), "rb") as f:
        head = f.read(3000)
    with open(os.path.join(IMAGES, "truncated.jpg"), "wb") as f:
        f.write(head)


# ---------------------------------------------------------------------------------------------- reference


def decode_like_reference(path):
    """PIL convert("RGB"), plus the EXIF orientation that dvl applies on purpose."""
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def py_round(x):
    return round(x)  # Python 3: half to even


def smart_resize_ref(height, width, factor=28, min_pixels=DEFAULT_MIN, max_pixels=DEFAULT_MAX):
    """Written from the description of transformers' smart_resize (Qwen2-VL); checked against it when importable."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError("aspect")
    h = py_round(height / factor) * factor
    w = py_round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def patches_ref(rgb, min_pixels, max_pixels):
    """The Qwen2-VL processor's math: PIL bicubic, float64 * (1/255) -> float32, float32 (x - mean) / std, layout."""
    width, height = rgb.size
    rh, rw = smart_resize_ref(height, width, 28, min_pixels, max_pixels)
    resized = rgb.resize((rw, rh), Image.BICUBIC)
    x = (np.asarray(resized).astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    chw = x.transpose(2, 0, 1)
    frames = np.stack([chw, chw])  # temporal patch 2: the image twice
    gh, gw = rh // 14, rw // 14
    p = frames.reshape(1, 2, 3, gh // 2, 2, 14, gw // 2, 2, 14).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(p.reshape(gh * gw, 1176), dtype=np.float32), (rh, rw), (1, gh, gw)


def check_against_transformers(cases):
    try:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor, smart_resize
    except Exception as e:  # noqa: BLE001 - optional cross-check
        print(f"transformers not importable ({type(e).__name__}); skipping the cross-check", file=sys.stderr)
        return
    for h, w, mn, mx in cases:
        try:
            got = smart_resize(h, w, 28, mn, mx)
        except ValueError:
            got = "error"
        try:
            ours = smart_resize_ref(h, w, 28, mn, mx)
        except ValueError:
            ours = "error"
        if got != "error":
            got = tuple(got)
        assert got == ours, (h, w, mn, mx, got, ours)
    for name, mn, mx in PIPELINE_CASES:
        proc = Qwen2VLImageProcessor(min_pixels=mn, max_pixels=mx)
        img = decode_like_reference(os.path.join(IMAGES, name))
        hf = proc(images=img, return_tensors="np")
        ours, _, grid = patches_ref(img, mn, mx)
        assert hf["pixel_values"].dtype == np.float32
        assert np.array_equal(hf["pixel_values"], ours), name
        assert tuple(hf["image_grid_thw"][0]) == grid, name
    print("transformers cross-check passed", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- cases

DECODE_FILES = [
    "chelsea.png", "coffee.jpg", "astronaut-256.png", "rgba.png", "gray.png", "gray-alpha.png", "gray16.png",
    "rgb16.png", "palette-trns.png", "bilevel.png", "cmyk.jpg", "small.webp", "anim.gif", "orient5.jpg",
    "orient6.jpg", "junk-bytes.jpg",
]

# (source, width, height): downscale, upscale, one side unchanged, large factor, mixed, odd sizes, no-op.
RESIZE_CASES = [
    ("chelsea.png", 224, 168), ("chelsea.png", 1000, 700), ("chelsea.png", 451, 140), ("chelsea.png", 200, 300),
    ("chelsea.png", 37, 29), ("chelsea.png", 3, 500), ("chelsea.png", 452, 301), ("chelsea.png", 451, 300),
    ("coffee.jpg", 588, 392), ("coffee.jpg", 1, 1), ("astronaut-256.png", 392, 392),
    ("pattern:640x480", 333, 250), ("pattern:640x480", 999, 777), ("pattern:640x480", 640, 97),
]

# 12-megapixel check: coffee upscaled to 4032x3024, then downscaled to 1148x868.
CHAIN_CASE = ("coffee.jpg", (4032, 3024), (1148, 868))

PIPELINE_CASES = [
    ("chelsea.png", DEFAULT_MIN, DEFAULT_MAX),
    ("coffee.jpg", DEFAULT_MIN, DEFAULT_MAX),
    ("astronaut-256.png", DEFAULT_MIN, DEFAULT_MAX),  # min clamp: upscaled
    ("chelsea.png", 3136, 12845056),  # Qwen2.5-VL's inherited budget
    ("coffee.jpg", 56 * 56, 28 * 28 * 64),  # max clamp
    ("orient6.jpg", DEFAULT_MIN, DEFAULT_MAX),
]


def pattern(width, height):
    """High-contrast stripes over a ramp: makes the bicubic overshoot and clip. Mirrored in the tests."""
    y, x = np.mgrid[0:height, 0:width]
    out = np.zeros((height, width, 3), dtype=np.uint8)
    for c in range(3):
        ramp = (x * 7 + y * 3 + c * 50) & 255
        out[:, :, c] = np.where(((x >> 2) ^ (y >> 3)) & 1, 255, ramp)
    return Image.fromarray(out, "RGB")


def source(name):
    if name.startswith("pattern:"):
        w, h = map(int, name.split(":")[1].split("x"))
        return pattern(w, h)
    return decode_like_reference(os.path.join(IMAGES, name))


def rgb_samples(img, count=8):
    a = np.asarray(img)
    h, w = a.shape[:2]
    spots = [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1), (w // 2, h // 2)]
    spots += [((i * 7919) % w, (i * 104729) % h) for i in range(1, count - len(spots) + 1)]
    return [[x, y, *map(int, a[y, x])] for x, y in spots]


def smart_resize_cases():
    sizes = [(300, 451), (400, 600), (3024, 4032), (10, 2000), (4032, 20)]
    sizes += [(1, 1), (5, 7), (13, 13), (14, 14), (27, 29), (1, 200), (1, 201), (200, 1), (5, 1000), (5, 1001)]
    cases = [(h, w, DEFAULT_MIN, DEFAULT_MAX) for h, w in sizes]
    cases += [(h, w, 3136, 12845056) for h, w in sizes]
    rng = np.random.default_rng(20240601)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 5000, 2))
        mn, mx = sorted(int(v) for v in rng.integers(1, 2_000_000, 2))
        cases.append((h, w, mn, mx))
    for t in range(20):  # exact ties of round(): sides of 28k + 14
        cases.append((28 * t + 14, 28 * (t + 3) + 14, 1, 10**9))
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make-images", metavar="SKIMAGE_DATA_DIR")
    args = parser.parse_args()
    if args.make_images:
        make_images(args.make_images)

    expected = {"pillow": Image.__version__, "numpy": np.__version__, "decode": {}, "resize": [], "pipeline": []}
    for name in DECODE_FILES:
        img = decode_like_reference(os.path.join(IMAGES, name))
        expected["decode"][name] = {
            "width": img.width, "height": img.height, "sha256": sha256(img.tobytes()), "samples": rgb_samples(img)
        }
    for name, w, h in RESIZE_CASES:
        out = source(name).resize((w, h), Image.BICUBIC)
        expected["resize"].append({"source": name, "width": w, "height": h, "sha256": sha256(out.tobytes()),
                                   "samples": rgb_samples(out)})
    name, (w1, h1), (w2, h2) = CHAIN_CASE
    big = source(name).resize((w1, h1), Image.BICUBIC)
    small = big.resize((w2, h2), Image.BICUBIC)
    expected["chain"] = {"source": name, "steps": [
        {"width": w1, "height": h1, "sha256": sha256(big.tobytes()), "samples": rgb_samples(big)},
        {"width": w2, "height": h2, "sha256": sha256(small.tobytes()), "samples": rgb_samples(small)},
    ]}
    for name, mn, mx in PIPELINE_CASES:
        patches, (rh, rw), grid = patches_ref(decode_like_reference(os.path.join(IMAGES, name)), mn, mx)
        rows, cols = patches.shape
        spots = [(0, 0), (0, 1175), (rows - 1, 1175), (rows // 2, 588)] + [((i * 7919) % rows, (i * 104729) % cols)
                                                                           for i in range(1, 9)]
        expected["pipeline"].append({
            "source": name, "minPixels": mn, "maxPixels": mx, "resized": [rh, rw], "gridThw": list(grid),
            "sha256": sha256(patches.astype("<f4").tobytes()),
            "samples": [[r, c, float(patches[r, c])] for r, c in spots],
        })
    sr = []
    for h, w, mn, mx in smart_resize_cases():
        try:
            sr.append([h, w, mn, mx, *smart_resize_ref(h, w, 28, mn, mx)])
        except ValueError:
            sr.append([h, w, mn, mx, "error"])
    expected["smartResize"] = sr

    check_against_transformers(smart_resize_cases())

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"wrote {os.path.relpath(OUT, ROOT)}")


if __name__ == "__main__":
    main()
