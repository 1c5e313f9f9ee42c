"""Deterministic demo corpus built from the real photos shipped with scikit-image.

Every generated file carries its ground truth (:class:`DemoFile`): the transform
applied (``kind``), the original it came from (``of``), its class label (the
folder) and what a correct pipeline should do with it (``expect``).

``expect`` vocabulary: ``accept``; ``exact_duplicate`` (same bytes as ``of``);
``pixel_duplicate`` (same decoded pixels as ``of``); ``near_duplicate``; and
``<action>:<gate>`` for a file made to trip a quality gate, with Loupe's gate names
and default actions (:data:`DEFAULT_ACTIONS`), e.g. ``quarantine:corrupt``,
``reject:resolution``, ``flag:blur``. A flagged file is kept, so one derived from an
original may also be grouped with it as a near duplicate (:data:`ALSO_ACCEPTABLE`).
Originals sort before their derived files and have the highest resolution, so
keep-first and keep-highest-resolution policies keep the original.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageEnhance, ImageFilter, ImageOps

#: Gate name -> default action, mirroring ``loupe_api.dataset.QualityGates`` (a test keeps them in step).
DEFAULT_ACTIONS: dict[str, str] = {
    "corrupt": "quarantine",
    "format": "reject",
    "extension": "flag",
    "resolution": "reject",
    "max_pixels": "quarantine",
    "blur": "flag",
    "dark": "flag",
    "bright": "flag",
    "noise": "flag",
    "low_contrast": "flag",
    "low_information": "flag",
    "aspect_ratio": "flag",
}

#: The gate each defect kind is made to trip.
KIND_GATES: dict[str, str] = {
    "zero_bytes": "corrupt",
    "text_as_jpg": "corrupt",
    "truncated": "corrupt",
    "bomb": "max_pixels",
    "wrong_extension": "extension",
    "too_small": "resolution",
    "odd_aspect": "aspect_ratio",
    "blurry": "blur",
    "dark": "dark",
    "bright": "bright",
    "noisy": "noise",
    "low_contrast": "low_contrast",
    "low_information": "low_information",
}

#: Other verdicts also defensible for a kind: some images trip more than one gate, and a flagged
#: (so kept) file derived from an original may also be grouped with it as a near duplicate.
ALSO_ACCEPTABLE: dict[str, tuple[str, ...]] = {
    "low_information": ("flag:blur", "flag:dark", "flag:bright", "flag:low_contrast"),
    "dark": ("flag:low_information", "flag:blur", "near_duplicate"),
    "bright": ("flag:low_information", "flag:blur", "flag:low_contrast", "near_duplicate"),
    "blurry": ("flag:low_information", "near_duplicate"),
    "noisy": ("near_duplicate",),
    "low_contrast": ("near_duplicate",),
    "odd_aspect": ("reject:resolution",),
}


def expect_for(kind: str, actions: dict[str, str] | None = None) -> str:
    """``<action>:<gate>`` for a defect kind, under ``actions`` (default: :data:`DEFAULT_ACTIONS`)."""
    gate = KIND_GATES[kind]
    return f"{(actions or DEFAULT_ACTIONS)[gate]}:{gate}"


#: Real originals (expect ``accept``) that trip naive gate metrics (numbers for the grey image).
HARD_NEGATIVES: dict[str, str] = {
    "space/hubble_deep_field.jpg": "black sky: mean luma 19, 67% of pixels <= 16, but p99 171 (judge exposure by percentiles)",
    "science/retina.jpg": "1411 px fundus, smooth: Laplacian variance 11 at native size, 75 at 512 px, 23% black border",
    "space/moon.jpg": "low contrast: std 13, Laplacian variance 65, entropy 4.9",
    "textures/brick.jpg": "soft texture: Laplacian variance 174",
    "textures/grass.jpg": "fine texture reads as noise: estimate_sigma 9.4 (the noisy file is ~50)",
    "textures/gravel.jpg": "fine texture reads as noise: estimate_sigma 5.6",
}

SIZES = ("small", "large")
JPEG_QUALITY = 92
BOMB_SIDE = 50_000


@dataclass(frozen=True)
class DemoFile:
    """One generated file and its ground truth."""

    path: str
    kind: str
    of: str | None
    label: str
    expect: str


@dataclass(frozen=True)
class _Source:
    name: str
    label: str
    stem: str
    ext: str
    load: Callable[[], Any]


def _skimage(name: str, index: int | None = None) -> Callable[[], Any]:
    def load() -> Any:
        from skimage import data

        value = getattr(data, name)()
        return value if index is None else value[index]

    return load


# Real photographs only (no synthetic images). Left out on purpose: ``clock`` (motion-blurred
# by design), ``cell`` (defocused, nearly flat: as blurry as a blurred photo), ``cat`` (the same
# picture as ``chelsea``) and the right half of ``stereo_motorcycle`` (a near duplicate of the left).
_SOURCES: tuple[_Source, ...] = (
    _Source("astronaut", "people", "astronaut", "jpg", _skimage("astronaut")),
    _Source("camera", "people", "cameraman", "png", _skimage("camera")),
    _Source("chelsea", "animals", "chelsea", "jpg", _skimage("chelsea")),
    _Source("coffee", "objects", "coffee", "jpg", _skimage("coffee")),
    _Source("coins", "objects", "coins", "jpg", _skimage("coins")),
    _Source("rocket", "objects", "rocket", "jpg", _skimage("rocket")),
    _Source("motorcycle", "objects", "motorcycle", "jpg", _skimage("stereo_motorcycle", 0)),
    _Source("hubble_deep_field", "space", "hubble_deep_field", "jpg", _skimage("hubble_deep_field")),
    _Source("moon", "space", "moon", "jpg", _skimage("moon")),
    _Source("brick", "textures", "brick", "jpg", _skimage("brick")),
    _Source("grass", "textures", "grass", "jpg", _skimage("grass")),
    _Source("gravel", "textures", "gravel", "jpg", _skimage("gravel")),
    _Source("page", "documents", "page", "png", _skimage("page")),
    _Source("text", "documents", "text", "png", _skimage("text")),
    _Source(
        "immunohistochemistry", "science", "immunohistochemistry", "jpg", _skimage("immunohistochemistry")
    ),
    _Source("retina", "science", "retina", "jpg", _skimage("retina")),
)

# Which source gets which special treatment (falls back to the next usable one).
_EXIF = ("coffee", "motorcycle", "rocket")
_WRONG_EXT = ("rocket", "coins", "moon")


def available_sources() -> list[str]:
    """Names of the skimage photos that load offline in this environment."""
    return [s.name for s in _SOURCES if _load(s) is not None]


def _load(src: _Source) -> Image.Image | None:
    try:
        arr = np.asarray(src.load())
    except Exception:  # missing pooch, no network, removed dataset...
        return None
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        return None
    return Image.fromarray(np.ascontiguousarray(arr), "L" if arr.ndim == 2 else "RGB")


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[DemoFile] = []

    def _path(self, rel: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def taken(self, rel: str) -> bool:
        return any(f.path == rel for f in self.files)

    def add(self, rel: str, kind: str, of: str | None, expect: str) -> Path:
        if self.taken(rel):
            raise ValueError(f"duplicate demo path {rel}")
        self.files.append(DemoFile(rel, kind, of, rel.split("/", 1)[0], expect))
        return self._path(rel)

    def image(self, img: Image.Image, rel: str, kind: str, of: str | None, expect: str) -> Path:
        path = self.add(rel, kind, of, expect)
        path.write_bytes(_encode(img, rel.rsplit(".", 1)[1]))
        return path


def _encode(img: Image.Image, ext: str, *, quality: int = JPEG_QUALITY, **extra: Any) -> bytes:
    buf = io.BytesIO()
    if ext == "png":
        img.save(buf, "PNG", compress_level=extra.pop("compress_level", 6), **extra)
    else:
        img.save(buf, "JPEG", quality=quality, optimize=False, progressive=False, **extra)
    return buf.getvalue()


def _decoded(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


def _scale(img: Image.Image, gain: float, offset: float = 0.0) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) * gain + offset
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), img.mode)


def _noisy(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, sigma, size=np.asarray(img).shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), img.mode)


def _center_crop(img: Image.Image, w: int, h: int) -> Image.Image:
    left, top = (img.width - w) // 2, (img.height - h) // 2
    return img.crop((left, top, left + w, top + h))


def _resize(img: Image.Image, factor: float) -> Image.Image:
    size = (round(img.width * factor), round(img.height * factor))
    return img.resize(size, Image.Resampling.LANCZOS)


def _thumb(img: Image.Image, side: int) -> Image.Image:
    s = min(img.size)
    return _center_crop(img, s, s).resize((side, side), Image.Resampling.LANCZOS)


def _strip(img: Image.Image, where: float = 0.5, ratio: int = 8) -> Image.Image:
    h = img.width // ratio
    top = min(max(round(img.height * where - h / 2), 0), img.height - h)
    return img.crop((0, top, img.width, top + h))


def _overexposed(img: Image.Image) -> Image.Image | None:
    out = _scale(img, 2.5, 150.0)
    luma = np.asarray(out.convert("L"))
    return out if np.percentile(luma, 5) >= 242 else None  # 95% of pixels (nearly) blown out


def _low_information(rng: np.random.Generator) -> Image.Image:
    base = np.array([128.0, 124.0, 118.0], dtype=np.float32)
    arr = base + rng.normal(0.0, 1.0, size=(384, 512, 3))
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A small, fully valid 1-bit grayscale PNG whose pixels are all black and whose size is side x side."""
    row = side // 8 + (side % 8 > 0) + 1  # filter byte + packed bits
    rows_per_block = 250
    full, rest = divmod(side, rows_per_block)
    # Zero blocks compressed after a full flush are identical, so compress each distinct block once.
    co = zlib.compressobj(9)
    head = co.compress(b"\0" * (row * rows_per_block)) + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(b"\0" * (row * rows_per_block)) + co.flush(zlib.Z_FULL_FLUSH)
    tail = co.compress(b"\0" * (row * rest)) + co.flush(zlib.Z_FULL_FLUSH) if rest else b""
    total = row * side
    adler = ((total % 65521) << 16) | 1  # adler32 of `total` zero bytes
    stream = head + block * (full - 1) + tail + b"\x03\x00" + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", ihdr)]
    step = 1 << 16
    out += [_png_chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step)]
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _exif_bytes() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Loupe"
    exif[ExifTags.Base.Model] = "DemoCam 1"
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.DateTime] = "2021:06:01 12:34:56"
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.DateTimeOriginal] = "2021:06:01 12:34:56"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (48.0, 51.0, 29.6)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (2.0, 17.0, 40.2)
    return exif.tobytes()


def _video(path: Path, img: Image.Image, *, seconds: int = 3, fps: int = 10) -> None:
    import av

    src = np.asarray(img.convert("RGB"))
    w, h = 320, 240
    if src.shape[0] < h + 8 or src.shape[1] < w + 8:
        src = np.asarray(img.convert("RGB").resize((w * 2, h * 2), Image.Resampling.LANCZOS))
    n = seconds * fps
    xs = np.linspace(0, src.shape[1] - w, n).round().astype(int)
    ys = np.linspace(0, src.shape[0] - h, n).round().astype(int)
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as out:
        try:
            stream = out.add_stream("libx264", rate=fps)
            # mbtree off: with it, x264 output differs on the first encode of a process.
            stream.options = {"preset": "veryfast", "crf": "26", "threads": "1", "x264-params": "mbtree=0"}
        except Exception:  # PyAV build without libx264
            stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.time_base = Fraction(1, fps)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(src[y : y + h, x : x + w]), format="rgb24"
            )
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def build_demo_corpus(root: Path, *, size: str = "small", seed: int = 0) -> list[DemoFile]:
    """Write the demo corpus under ``root`` (which must be empty or absent) and return its truth."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    large = size == "large"
    rng = np.random.default_rng(seed)
    w = _Writer(root)

    loaded = [(s, img) for s in _SOURCES if (img := _load(s)) is not None]
    if len(loaded) < 6:
        raise RuntimeError("too few scikit-image photos load offline to build the demo corpus")
    names = [s.name for s, _ in loaded]
    exif_name = next((n for n in _EXIF if n in names), None)
    wrong_name = next((n for n in _WRONG_EXT if n in names and n != exif_name), None)

    plain: list[tuple[_Source, Image.Image, str]] = []
    for src, img in loaded:
        rel = f"{src.label}/{src.stem}.{src.ext}"
        if src.name == exif_name:
            path = w.add(rel, "exif", None, "accept")
            upright = img.convert("RGB")
            # Orientation 6: the stored pixels must be rotated 90 degrees clockwise for display.
            stored = upright.transpose(Image.Transpose.ROTATE_90)
            path.write_bytes(_encode(stored, "jpg", exif=_exif_bytes()))
        elif src.name == wrong_name:
            path = w.add(
                f"{src.label}/{src.stem}.jpg", "wrong_extension", None, expect_for("wrong_extension")
            )
            path.write_bytes(_encode(img, "png"))
        else:
            w.image(img, rel, "original", None, "accept")
            plain.append((src, img, rel))

    def pick(*prefer: str) -> tuple[_Source, Image.Image, str]:
        for name in prefer:
            for item in plain:
                if item[0].name == name:
                    return item
        return plain[0]

    def jpeg_pick(*prefer: str) -> tuple[_Source, Image.Image, str]:
        jpegs = [p for p in plain if p[0].ext == "jpg"]
        for name in prefer:
            for item in jpegs:
                if item[0].name == name:
                    return item
        return jpegs[0]

    def derived(item: tuple[_Source, Image.Image, str], suffix: str, ext: str | None = None) -> str:
        src, _, _ = item
        return f"{src.label}/{src.stem}_{suffix}.{ext or src.ext}"

    def exact_copy(item: tuple[_Source, Image.Image, str]) -> None:
        data = (root / item[2]).read_bytes()
        w.add(derived(item, "copy"), "exact_copy", item[2], "exact_duplicate").write_bytes(data)

    def reencode(item: tuple[_Source, Image.Image, str]) -> None:
        pixels = _decoded(root / item[2])
        rel = derived(item, "lossless", "png")
        level = 9 if item[0].ext == "png" else 6
        path = w.add(rel, "reencoded_png", item[2], "pixel_duplicate")
        path.write_bytes(_encode(pixels, "png", compress_level=level))

    def near(item: tuple[_Source, Image.Image, str], kind: str) -> None:
        _, img, rel = item
        if kind == "near_resized":
            w.image(_resize(img, 0.8), derived(item, "small"), kind, rel, "near_duplicate")
        elif kind == "near_brightness":
            out = ImageEnhance.Brightness(img).enhance(1.1)
            w.image(out, derived(item, "brighter"), kind, rel, "near_duplicate")
        elif kind == "near_jpeg_q":
            path = w.add(derived(item, "q60", "jpg"), kind, rel, "near_duplicate")
            path.write_bytes(_encode(_decoded(root / rel), "jpg", quality=60))
        elif kind == "near_crop":
            out = _center_crop(img, round(img.width * 0.95), round(img.height * 0.95))
            w.image(out, derived(item, "crop"), kind, rel, "near_duplicate")
        elif kind == "near_flip":
            w.image(ImageOps.mirror(img), derived(item, "mirror"), kind, rel, "near_duplicate")

    def defect(item: tuple[_Source, Image.Image, str], kind: str) -> None:
        _, img, rel = item
        if kind == "blurry":
            out = img.filter(ImageFilter.GaussianBlur(radius=max(8, max(img.size) // 25)))
            w.image(out, derived(item, "blurry", "jpg"), kind, rel, expect_for("blurry"))
        elif kind == "dark":
            w.image(_scale(img, 0.1), derived(item, "dark", "jpg"), kind, rel, expect_for("dark"))
        elif kind == "bright":
            over = _overexposed(img)  # photos with deep shadows do not blow out: skip them
            if over is not None:
                w.image(over, derived(item, "overexposed", "jpg"), kind, rel, expect_for("bright"))
        elif kind == "noisy":
            out = _noisy(img, rng, 60.0)
            w.image(out, derived(item, "noisy", "jpg"), kind, rel, expect_for("noisy"))
        elif kind == "low_contrast":  # hazy: a fifth of the tonal spread left
            arr = np.asarray(img, dtype=np.float32)
            out = Image.fromarray(
                np.clip(np.rint(arr.mean() + (arr - arr.mean()) * 0.2), 0, 255).astype(np.uint8)
            )
            w.image(out, derived(item, "hazy", "jpg"), kind, rel, expect_for("low_contrast"))

    # Duplicates.
    exact_copy(pick("astronaut"))
    reencode(jpeg_pick("chelsea"))
    near(pick("motorcycle"), "near_resized")
    near(pick("coins"), "near_brightness")
    near(pick("astronaut"), "near_jpeg_q")
    # Quality gates.
    defect(pick("chelsea"), "blurry")
    defect(pick("motorcycle"), "dark")
    defect(pick("immunohistochemistry", "chelsea", "coins"), "bright")
    defect(pick("camera"), "noisy")
    defect(pick("coffee", "astronaut"), "low_contrast")
    w.image(
        _low_information(rng),
        "objects/blank_wall.jpg",
        "low_information",
        None,
        expect_for("low_information"),
    )
    strip_src = pick("motorcycle")
    w.image(
        _strip(strip_src[1]),
        derived(strip_src, "strip", "jpg"),
        "odd_aspect",
        strip_src[2],
        expect_for("odd_aspect"),
    )
    small_src = pick("coins")
    w.image(
        _thumb(small_src[1], 24),
        derived(small_src, "thumb", "jpg"),
        "too_small",
        small_src[2],
        expect_for("too_small"),
    )
    # Broken or hostile files.
    trunc_src = jpeg_pick("hubble_deep_field")
    data = (root / trunc_src[2]).read_bytes()
    w.add(
        derived(trunc_src, "partial", "jpg"), "truncated", trunc_src[2], expect_for("truncated")
    ).write_bytes(data[: len(data) * 6 // 10])
    w.add("objects/empty.jpg", "zero_bytes", None, expect_for("zero_bytes")).write_bytes(b"")
    w.add("documents/notes.jpg", "text_as_jpg", None, expect_for("text_as_jpg")).write_bytes(
        b"Shopping list\n- film\n- lens cloth\nThis is a text file, not a JPEG.\n"
    )
    w.add("space/deep_field_mosaic.png", "bomb", None, expect_for("bomb")).write_bytes(bomb_png())
    # Video.
    vid_src = pick("hubble_deep_field")
    _video(w.add("videos/hubble_pan.mp4", "video", vid_src[2], "accept"), vid_src[1])

    if large:
        for item in plain:
            if not w.taken(derived(item, "copy")):
                exact_copy(item)
            if not w.taken(derived(item, "lossless", "png")):
                reencode(item)
            suffixes = {"near_resized": "small", "near_brightness": "brighter", "near_jpeg_q": "q60"}
            for kind in ("near_resized", "near_brightness", "near_jpeg_q", "near_crop", "near_flip"):
                suffix = suffixes.get(kind, "crop" if kind == "near_crop" else "mirror")
                ext = "jpg" if kind == "near_jpeg_q" else None
                if not w.taken(derived(item, suffix, ext)):
                    near(item, kind)
            for kind, suffix in (
                ("blurry", "blurry"),
                ("dark", "dark"),
                ("bright", "overexposed"),
                ("noisy", "noisy"),
            ):
                if not w.taken(derived(item, suffix, "jpg")):
                    defect(item, kind)
        for where, suffix in ((0.25, "strip_top"), (0.75, "strip_bottom")):
            w.image(
                _strip(strip_src[1], where),
                derived(strip_src, suffix, "jpg"),
                "odd_aspect",
                strip_src[2],
                expect_for("odd_aspect"),
            )
        for name in ("astronaut", "chelsea"):
            item = pick(name)
            if w.taken(derived(item, "thumb", "jpg")):
                continue
            w.image(
                _thumb(item[1], 24),
                derived(item, "thumb", "jpg"),
                "too_small",
                item[2],
                expect_for("too_small"),
            )
        for name in ("astronaut", "retina"):
            item = jpeg_pick(name)
            if w.taken(derived(item, "partial", "jpg")):
                continue
            data = (root / item[2]).read_bytes()
            w.add(derived(item, "partial", "jpg"), "truncated", item[2], expect_for("truncated")).write_bytes(
                data[: len(data) * 6 // 10]
            )
        w.image(
            _low_information(rng).convert("L"),
            "documents/blank_scan.png",
            "low_information",
            None,
            expect_for("low_information"),
        )
        ret = pick("retina")
        _video(w.add("videos/retina_pan.mp4", "video", ret[2], "accept"), ret[1])

    return sorted(w.files, key=lambda f: f.path)


def truth_path(root: Path) -> Path:
    """Where :func:`write_truth` puts the truth file: next to the corpus, not inside it."""
    root = Path(root).resolve()
    return root.parent / f"{root.name}-truth.json"


def write_truth(root: Path, files: Sequence[DemoFile]) -> Path:
    """Write the ground truth (with each file's size and sha256) next to ``root``; return its path."""
    root = Path(root)
    entries = []
    for f in sorted(files, key=lambda f: f.path):
        data = (root / f.path).read_bytes()
        entries.append({**asdict(f), "bytes": len(data), "sha256": sha256(data).hexdigest()})
    doc = {"format": "loupe-demo-truth/1", "files": entries}
    out = truth_path(root)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m loupe_workers.ingest.demo ROOT [--size large] [--seed N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("root", type=Path)
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    files = build_demo_corpus(args.root, size=args.size, seed=args.seed)
    truth = write_truth(args.root, files)
    total = sum((args.root / f.path).stat().st_size for f in files)
    print(f"{len(files)} files, {total / 1e6:.1f} MB under {args.root}; truth in {truth}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
