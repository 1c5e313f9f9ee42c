"""Hostile test files: a seeded mutation fuzzer over every supported image format and over videos.

Every file is a ``HostileFile`` whose ``label`` names the mutation (``png/ihdr-width=4294967295``,
``jpeg/truncate@50%``, ``exif/ifd-loop``, ...), so a failure names what was done to the bytes. Seeds are
scikit-image photos at small sizes; the same ``seed`` always gives the same bytes.

- ``image_corpus``: every format (JPEG, PNG, WebP, BMP, TIFF, GIF, animated GIF/WebP/APNG) with
  truncations at several offsets, bit flips, header fields set to extremes (dimensions, chunk and
  segment lengths, frame counts), and files with hostile EXIF (huge blocks, offsets out of the file,
  IFD loops, impossible dates, zero denominators).
- ``video_corpus``: MP4 (H.264 and MPEG-4 part 2) and MKV (FFV1) written with PyAV, their truncations
  and bit flips, and crafted containers: a MOV of 16000x16000 PNG frames, an MKV whose header declares
  16000x16000 for 64x48 frames, a MOV whose frame size grows mid-stream, timestamps that jump by
  ~10^14 s, and headers whose frame rate or frame count are zero or huge.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from PIL import Image

from support.photos import photo


@dataclass(frozen=True)
class HostileFile:
    name: str  # relative path under the corpus root, e.g. "png/ihdr-width-0.png"
    data: bytes
    label: str  # the mutation, e.g. "png/ihdr-width=0"


def write_corpus(files: list[HostileFile], root: Path) -> dict[str, str]:
    """Write the files under ``root``; return key -> label."""
    labels: dict[str, str] = {}
    for item in files:
        path = root / item.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.data)
        labels[item.name] = item.label
    return labels


# --- seeds -----------------------------------------------------------------------------------------
SEED_PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def seed_images(long_side: int = 96) -> list[Image.Image]:
    return [photo(name, long_side) for name in SEED_PHOTOS]


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    if fmt == "GIF":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def animated(frames: list[Image.Image], fmt: str) -> bytes:
    buffer = io.BytesIO()
    first, *rest = frames
    options: dict[str, object] = {"save_all": True, "append_images": rest, "duration": 100, "loop": 0}
    if fmt == "GIF":
        first = first.convert("P", palette=Image.Palette.ADAPTIVE)
        options["append_images"] = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in rest]
    first.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _frames(image: Image.Image, count: int) -> list[Image.Image]:
    return [image.rotate(angle * 360 / count) for angle in range(count)]


# --- generic mutations -----------------------------------------------------------------------------
def truncations(data: bytes) -> Iterator[tuple[str, bytes]]:
    """The file cut at fixed offsets (inside the header) and at fractions of its length."""
    seen: set[int] = set()
    for label, cut in (
        ("0B", 0),
        ("1B", 1),
        ("12B", 12),
        ("33B", 33),
        ("10%", len(data) // 10),
        ("50%", len(data) // 2),
        ("90%", len(data) * 9 // 10),
        ("-1B", len(data) - 1),
    ):
        if cut < len(data) and cut not in seen:
            seen.add(cut)
            yield f"truncate@{label}", data[:cut]


def bit_flips(data: bytes, rng: random.Random, flips: int, *, start: int = 0) -> bytes:
    out = bytearray(data)
    for _ in range(flips):
        position = rng.randrange(start, len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def _patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


# --- PNG and APNG ------------------------------------------------------------------------------------
def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_chunks(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(offset of the length field, type, payload) of each chunk."""
    offset = 8
    while offset + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, offset)
        kind = data[offset + 4 : offset + 8]
        yield offset, kind, data[offset + 8 : offset + 8 + length]
        offset += 12 + length


def png_replace(data: bytes, kind: bytes, payload: bytes, *, fix_crc: bool = True, index: int = 0) -> bytes:
    """Replace the payload of the ``index``-th chunk of ``kind`` (CRC recomputed unless told not to)."""
    for offset, found, old in png_chunks(data):
        if found == kind:
            if index:
                index -= 1
                continue
            crc = zlib.crc32(kind + payload) if fix_crc else zlib.crc32(kind + old)
            chunk = struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)
            return data[:offset] + chunk + data[offset + 12 + len(old) :]
    raise ValueError(f"no {kind!r} chunk")


def png_insert(data: bytes, before: bytes, chunk: bytes) -> bytes:
    for offset, kind, _ in png_chunks(data):
        if kind == before:
            return data[:offset] + chunk + data[offset:]
    raise ValueError(f"no {before!r} chunk")


def png_with_length(data: bytes, kind: bytes, length: int) -> bytes:
    for offset, found, _ in png_chunks(data):
        if found == kind:
            return _patch(data, offset, ">I", length)
    raise ValueError(f"no {kind!r} chunk")


def blank_png(width: int, height: int, *, depth: int = 8, colour: int = 0) -> bytes:
    """A valid PNG of zeros, compressed row by row so a huge one costs little memory to make."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\x00" * (1 + width * channels * depth // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def png_mutations(data: bytes) -> Iterator[tuple[str, bytes]]:
    ihdr = next(p for _, k, p in png_chunks(data) if k == b"IHDR")
    width, height = struct.unpack_from(">II", ihdr)
    for w, h in (
        (0, height),
        (width, 0),
        (0xFFFFFFFF, height),
        (width, 0x7FFFFFFF),
        (65535, 65535),
        (1, 100_000_001),
        (width * 4, height * 4),  # plausible, larger than the data
        (1, 1),
    ):
        yield f"ihdr-size={w}x{h}", png_replace(data, b"IHDR", struct.pack(">II", w, h) + ihdr[8:])
    yield (
        "ihdr-size=65535x65535-bad-crc",
        png_replace(data, b"IHDR", struct.pack(">II", 65535, 65535) + ihdr[8:], fix_crc=False),
    )
    for depth, colour in ((16, 3), (3, 2), (8, 7), (0, 0), (255, 6)):
        yield (
            f"ihdr-depth={depth}-colour={colour}",
            png_replace(data, b"IHDR", ihdr[:8] + bytes([depth, colour]) + ihdr[10:]),
        )
    yield "ihdr-interlace=255", png_replace(data, b"IHDR", ihdr[:12] + b"\xff")
    for kind in (b"IHDR", b"IDAT"):
        for length in (0, 0x7FFFFFFF, 0xFFFFFFFF):
            yield f"{kind.decode()}-length={length}", png_with_length(data, kind, length)
    idat = b"".join(p for _, k, p in png_chunks(data) if k == b"IDAT")
    yield "idat-not-zlib", png_replace(data, b"IDAT", b"\x00" * len(idat))
    yield "idat-empty", png_replace(data, b"IDAT", b"")
    yield "no-iend", data[: data.rfind(b"IEND") - 4]
    yield "plte-257-entries", png_insert(data, b"IDAT", png_chunk(b"PLTE", b"\x01" * 771))
    yield "text-chunk-1MB", png_insert(data, b"IDAT", png_chunk(b"tEXt", b"k\x00" + b"v" * (1 << 20)))
    yield (
        "ztxt-bomb",
        png_insert(data, b"IDAT", png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"\x00" * (64 << 20), 9))),
    )
    yield "iccp-garbage", png_insert(data, b"IDAT", png_chunk(b"iCCP", b"p\x00\x00" + b"\xff" * 512))
    yield "chunks-after-iend", data + png_chunk(b"IDAT", idat) * 3


def apng_mutations(data: bytes) -> Iterator[tuple[str, bytes]]:
    actl = next(p for _, k, p in png_chunks(data) if k == b"acTL")
    fctl = next(p for _, k, p in png_chunks(data) if k == b"fcTL")
    for frames in (0, 1, 0x7FFFFFFF, 0xFFFFFFFF):
        yield f"actl-frames={frames}", png_replace(data, b"acTL", struct.pack(">I", frames) + actl[4:])
    for w, h in ((0, 0), (0xFFFFFFFF, 0xFFFFFFFF), (65535, 65535)):
        yield (
            f"fctl-size={w}x{h}",
            png_replace(data, b"fcTL", fctl[:4] + struct.pack(">II", w, h) + fctl[12:]),
        )
    yield (
        "fctl-offset-outside",
        png_replace(
            data, b"fcTL", fctl[:12] + struct.pack(">II", 0xFFFFFF00, 0xFFFFFF00) + fctl[20:], index=1
        ),
    )
    yield "fctl-delay-den=0", png_replace(data, b"fcTL", fctl[:20] + b"\xff\xff\x00\x00" + fctl[24:])
    yield "fctl-dispose=255", png_replace(data, b"fcTL", fctl[:24] + b"\xff\xff" + fctl[26:])
    yield "fdat-sequence-reversed", data.replace(b"fdAT\x00\x00\x00", b"fdAT\xff\xff\xff", 1)


# --- JPEG ------------------------------------------------------------------------------------------
def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(offset of the marker, marker byte, segment length) up to the start of scan."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        (length,) = struct.unpack_from(">H", data, offset + 2)
        yield offset, marker, length
        if marker == 0xDA:
            return
        offset += 2 + length


def jpeg_mutations(data: bytes) -> Iterator[tuple[str, bytes]]:
    segments = list(jpeg_segments(data))
    sof = next(o for o, m, _ in segments if m in (0xC0, 0xC1, 0xC2))
    for h, w in ((0, 0), (65535, 65535), (1, 65535), (65535, 1), (20000, 20000), (9000, 9000)):
        yield f"sof-size={w}x{h}", _patch(data, sof + 5, ">HH", h, w)
    yield "sof-precision=16", _patch(data, sof + 4, ">B", 16)
    yield "sof-components=0", _patch(data, sof + 9, ">B", 0)
    yield "sof-components=255", _patch(data, sof + 9, ">B", 255)
    yield "sof-sampling=0", _patch(data, sof + 11, ">B", 0)
    yield "sof-sampling=ff", _patch(data, sof + 11, ">B", 0xFF)
    for offset, marker, _ in segments[:3]:
        for length in (0, 1, 2, 0xFFFF):
            yield f"segment-{marker:02x}-length={length}", _patch(data, offset + 2, ">H", length)
    dqt = next((o for o, m, _ in segments if m == 0xDB), None)
    if dqt is not None:
        yield "dqt-table-id=15", _patch(data, dqt + 4, ">B", 0x0F)
        yield "dqt-zero", data[: dqt + 5] + b"\x00" * 64 + data[dqt + 69 :]
    dht = next((o for o, m, _ in segments if m == 0xC4), None)
    if dht is not None:
        yield "dht-counts-ff", data[: dht + 5] + b"\xff" * 16 + data[dht + 21 :]
    sos = next(o for o, m, _ in segments if m == 0xDA)
    yield "scan-zeroed", data[: sos + 20] + b"\x00" * (len(data) - sos - 22) + b"\xff\xd9"
    yield "scan-ff-bytes", data[: sos + 20] + b"\xff" * (len(data) - sos - 22) + b"\xff\xd9"
    yield "no-eoi", data[:-2]
    yield "only-soi-eoi", b"\xff\xd8\xff\xd9"
    yield "restart-markers", data[: sos + 20] + b"\xff\xd0" * 2000 + data[sos + 20 :]
    yield (
        "sof-twice",
        data[:sos] + data[sof : sof + 2 + struct.unpack_from(">H", data, sof + 2)[0]] + data[sos:],
    )


# --- BMP -------------------------------------------------------------------------------------------
def bmp_mutations(data: bytes) -> Iterator[tuple[str, bytes]]:
    for w, h in (
        (0, 0),
        (-1, -1),
        (0x7FFFFFFF, 1),
        (1, -0x80000000),
        (100_000, 100_000),
        (9000, 9000),  # within max_pixels, far more than the data
        (1, 100_000_000),
    ):
        yield f"size={w}x{h}", _patch(data, 18, "<ii", w, h)
    for bpp in (0, 3, 33, 0xFFFF):
        yield f"bpp={bpp}", _patch(data, 28, "<H", bpp)
    for compression in (1, 2, 3, 0xFFFFFFFF):
        yield f"compression={compression}", _patch(data, 30, "<I", compression)
    yield "pixel-offset-outside", _patch(data, 10, "<I", 0xFFFFFFF0)
    yield "pixel-offset=0", _patch(data, 10, "<I", 0)
    for size in (0, 12, 0xFFFFFFFF):
        yield f"dib-header-size={size}", _patch(data, 14, "<I", size)
    yield "colours-used=2^32-1", _patch(data, 46, "<I", 0xFFFFFFFF)
    yield "planes=0", _patch(data, 26, "<H", 0)
    # an 8-bit RLE bitmap whose runs ask for far more pixels than the header declares
    header = struct.pack("<IiiHHIIiiII", 40, 64, 64, 1, 8, 1, 0, 0, 0, 256, 0)
    palette = b"\x00\x00\x00\x00" * 256
    runs = b"\xff\x01" * 50_000 + b"\x00\x02\xff\xff" * 100 + b"\x00\x01"
    body = header + palette + runs
    yield "rle8-overrun", b"BM" + struct.pack("<IHHI", 14 + len(body), 0, 0, 14 + 40 + 1024) + body


# --- TIFF ------------------------------------------------------------------------------------------
_TIFF_TYPES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8}


def tiff_entries(data: bytes) -> tuple[int, dict[int, int]]:
    """IFD0's offset and tag -> offset of its 12-byte entry (little-endian TIFF, as Pillow writes)."""
    assert data[:4] == b"II*\x00", "little-endian TIFF expected"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    entries = {}
    for index in range(count):
        at = ifd + 2 + 12 * index
        (tag,) = struct.unpack_from("<H", data, at)
        entries[tag] = at
    return ifd, entries


def tiff_set(data: bytes, tag: int, value: int, *, kind: int = 4, count: int = 1) -> bytes:
    """Set ``tag``'s entry to (kind, count, value) in place."""
    _, entries = tiff_entries(data)
    return _patch(data, entries[tag] + 2, "<HII", kind, count, value)


def tiff_mutations(data: bytes) -> Iterator[tuple[str, bytes]]:
    ifd, entries = tiff_entries(data)
    (count,) = struct.unpack_from("<H", data, ifd)
    next_at = ifd + 2 + 12 * count
    for w, h in ((0, 0), (0xFFFFFFFF, 1), (65535, 65535), (1, 0xFFFFFFFF), (9000, 9000)):
        yield f"size={w}x{h}", tiff_set(tiff_set(data, 256, w), 257, h)
    yield "strip-offset-outside", tiff_set(data, 273, 0xFFFFFF00)
    yield "strip-bytes=2^32-1", tiff_set(data, 279, 0xFFFFFFFF)
    yield "strip-count=2^30", tiff_set(data, 273, 8, count=1 << 30)
    yield "rows-per-strip=0", tiff_set(data, 278, 0) if 278 in entries else data[:-1]
    yield "bits-per-sample=0", tiff_set(data, 258, 0, kind=3, count=1)
    yield "bits-per-sample=65535", tiff_set(data, 258, 0xFFFF, kind=3, count=1)
    yield "samples-per-pixel=65535", tiff_set(data, 277, 0xFFFF, kind=3)
    yield "compression=65535", tiff_set(data, 259, 0xFFFF, kind=3)
    yield "compression=lzw-on-raw", tiff_set(data, 259, 5, kind=3)
    yield "photometric=99", tiff_set(data, 262, 99, kind=3)
    yield "tag-type=99", _patch(data, entries[256] + 2, "<H", 99)
    yield "entry-count=65535", _patch(data, ifd, "<H", 0xFFFF)
    yield "entry-count=0", _patch(data, ifd, "<H", 0)
    yield "ifd0-offset-outside", _patch(data, 4, "<I", 0xFFFFFFF0)
    yield "ifd0-offset=0", _patch(data, 4, "<I", 0)
    yield "next-ifd-loop", _patch(data, next_at, "<I", ifd)
    yield "next-ifd-outside", _patch(data, next_at, "<I", 0x7FFFFFFF)
    yield "exif-ifd-points-at-ifd0", _add_tiff_tag(data, 0x8769, 4, 1, ifd)


def _add_tiff_tag(data: bytes, tag: int, kind: int, count: int, value: int) -> bytes:
    """Append a copy of IFD0 with one more (sorted) entry and point the header at it."""
    ifd, _ = tiff_entries(data)
    (count0,) = struct.unpack_from("<H", data, ifd)
    raw = [data[ifd + 2 + 12 * i : ifd + 14 + 12 * i] for i in range(count0)]
    raw.append(struct.pack("<HHII", tag, kind, count, value))
    raw.sort(key=lambda e: struct.unpack_from("<H", e)[0])
    new_at = len(data) + (len(data) & 1)
    table = struct.pack("<H", len(raw)) + b"".join(raw) + b"\x00\x00\x00\x00"
    out = data + b"\x00" * (new_at - len(data)) + table
    return _patch(out, 4, "<I", new_at)


# --- GIF -------------------------------------------------------------------------------------------
def gif_descriptors(data: bytes) -> list[int]:
    """Offsets of image descriptors (0x2C), found by walking the blocks."""
    offset = 13
    flags = data[10]
    if flags & 0x80:
        offset += 3 << ((flags & 7) + 1)
    found = []
    while offset < len(data):
        kind = data[offset]
        if kind == 0x3B:
            break
        if kind == 0x21:
            offset += 2
        elif kind == 0x2C:
            found.append(offset)
            local = data[offset + 9]
            offset += 10
            if local & 0x80:
                offset += 3 << ((local & 7) + 1)
            offset += 1  # LZW minimum code size
        else:
            break
        while offset < len(data) and data[offset]:
            offset += data[offset] + 1
        offset += 1
    return found


def gif_mutations(data: bytes) -> Iterator[tuple[str, bytes]]:
    for w, h in ((0, 0), (65535, 65535), (1, 65535)):
        yield f"screen-size={w}x{h}", _patch(data, 6, "<HH", w, h)
    yield "global-table-flag-no-table", _patch(data, 10, "<B", 0x87)
    descriptors = gif_descriptors(data)
    first = descriptors[0]
    for w, h in ((0, 0), (65535, 65535)):
        yield f"frame-size={w}x{h}", _patch(data, first + 5, "<HH", w, h)
    yield "frame-offset=65535", _patch(data, first + 1, "<HH", 65535, 65535)
    yield "lzw-min-code=0", _patch(data, first + 10 + _local_table(data, first), "<B", 0)
    yield "lzw-min-code=12", _patch(data, first + 10 + _local_table(data, first), "<B", 12)
    yield "no-trailer", data[:-1]
    yield "no-image", data[:13] + b";"


def _local_table(data: bytes, descriptor: int) -> int:
    local = data[descriptor + 9]
    return (3 << ((local & 7) + 1)) if local & 0x80 else 0


def many_frame_gif(frames: int) -> bytes:
    """A valid GIF of ``frames`` 1x1 frames: a huge frame count in a small file."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    loop = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    frame = b"!\xf9\x04\x00\x00\x00\x00\x00" + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00"
    return header + loop + frame * frames + b";"


# --- WebP ------------------------------------------------------------------------------------------
def webp_mutations(data: bytes) -> Iterator[tuple[str, bytes]]:
    for size in (0, 4, 0xFFFFFFFF):
        yield f"riff-size={size}", _patch(data, 4, "<I", size)
    kind = data[12:16]
    yield f"{kind.decode()}-size=2^32-1", _patch(data, 16, "<I", 0xFFFFFFFF)
    if kind == b"VP8 ":
        start = data.find(b"\x9d\x01\x2a", 20)
        if start > 0:
            yield "vp8-size=16383x16383", _patch(data, start + 3, "<HH", 0x3FFF, 0x3FFF)
            yield "vp8-size=0x0", _patch(data, start + 3, "<HH", 0, 0)
    if kind == b"VP8L":
        yield "vp8l-size=16384x16384", _patch(data, 21, "<I", 0x0FFFFFFF)
    if kind == b"VP8X":
        yield "vp8x-canvas=2^24x2^24", data[:24] + b"\xff\xff\xff\xff\xff\xff" + data[30:]
        anmf = data.find(b"ANMF")
        if anmf > 0:
            yield "anmf-size=2^24x2^24", data[: anmf + 14] + b"\xff" * 6 + data[anmf + 20 :]
            yield "anmf-length=2^32-1", _patch(data, anmf + 4, "<I", 0xFFFFFFFF)
            yield "anmf-only", data[:30] + data[anmf:]


def vp8x_header(width: int, height: int, flags: int = 0) -> bytes:
    return (
        b"VP8X"
        + struct.pack("<II", 10, flags)
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )


def riff(chunks: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WEBP" + chunks


# --- EXIF ------------------------------------------------------------------------------------------
Entry = tuple[int, int, int, "bytes | int"]  # tag, type, count, value bytes (laid out) or a raw 4-byte field


def tiff_block(ifds: list[list[Entry]], *, links: list[int | None] | None = None) -> bytes:
    """A little-endian TIFF structure (an EXIF block) of IFDs laid out one after another.

    A bytes value longer than four goes into the data area after its IFD; an int value is written as
    the raw 4-byte field (an offset that may point anywhere). ``links`` sets each IFD's next-IFD
    offset (default: none); a link is an absolute offset, so loops and out-of-range links are easy.
    """
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    starts = []
    for index, entries in enumerate(ifds):
        start = len(out)
        starts.append(start)
        data_at = start + 2 + 12 * len(entries) + 4
        table = bytearray(struct.pack("<H", len(entries)))
        extra = bytearray()
        for tag, kind, count, value in entries:
            if isinstance(value, int):
                field = struct.pack("<I", value & 0xFFFFFFFF)
            elif len(value) <= 4:
                field = value.ljust(4, b"\x00")
            else:
                field = struct.pack("<I", data_at + len(extra))
                extra += value + (b"\x00" if len(value) & 1 else b"")
            table += struct.pack("<HHI", tag, kind, count) + field
        link = (links or [None] * len(ifds))[index]
        table += struct.pack("<I", 0 if link is None else link & 0xFFFFFFFF)
        out += table + extra
    return bytes(out)


def _ascii(text: bytes) -> bytes:
    return text + b"\x00"


def _rationals(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack("<II", n, d) for n, d in pairs)


def hostile_exif_blocks() -> Iterator[tuple[str, bytes]]:
    """EXIF blocks (TIFF structures) with hostile content, each labelled."""
    make = (0x010F, 2, 6, _ascii(b"Loupe"))
    yield "ifd0-entry-count=65535", b"II*\x00\x08\x00\x00\x00\xff\xff" + b"\x00" * 64
    yield "ifd0-offset-outside", b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\x00" * 16
    yield "ifd0-offset=0", b"II*\x00\x00\x00\x00\x00" + b"\x00" * 16
    yield "ifd-loop", tiff_block([[make]], links=[8])
    yield "ifd-loop-two", tiff_block([[make], [make]], links=[26 + 6, 8])
    yield "exif-ifd-points-at-ifd0", tiff_block([[make, (0x8769, 4, 1, 8)]])
    yield "exif-ifd-outside", tiff_block([[make, (0x8769, 4, 1, 0x7FFFFFF0)]])
    yield "gps-ifd-points-at-itself", tiff_block([[make, (0x8825, 4, 1, 8)]])
    yield "value-offset-outside", tiff_block([[(0x010F, 2, 64, 0x7FFFFFF0)]])
    yield "count=2^32-1", tiff_block([[(0x010F, 2, 0xFFFFFFFF, 8)]])
    yield "rational-count=2^28", tiff_block([[(0x011A, 5, 1 << 28, 8)]])
    yield "tag-type=0", tiff_block([[(0x0112, 0, 1, 6)]])
    yield "tag-type=255", tiff_block([[(0x0112, 255, 1, 6)]])
    for orientation in (0, 9, 65535):
        yield f"orientation={orientation}", tiff_block([[(0x0112, 3, 1, struct.pack("<H", orientation))]])
    yield "orientation-as-text", tiff_block([[(0x0112, 2, 8, _ascii(b"rotate"))]])
    yield "orientation-count=1000", tiff_block([[(0x0112, 3, 1000, b"\x06\x00" * 1000)]])
    for label, date in (
        ("9999-99-99", b"9999:99:99 99:99:99"),
        ("0000-00-00", b"0000:00:00 00:00:00"),
        ("feb-30-25h", b"2024:02:30 25:61:61"),
        ("year-minus", b"-001:01:01 00:00:00"),
        ("binary", bytes(range(256)) * 4),
        ("64KB", b"2024:" * 13000),
        ("empty", b""),
    ):
        yield (
            f"date={label}",
            tiff_block([[make, (0x8769, 4, 1, 26 + 6)], [(0x9003, 2, len(date) + 1, _ascii(date))]]),
        )
    yield "date-as-long", tiff_block([[(0x0132, 4, 1, 12345)]])
    gps: list[Entry] = [
        (0x0001, 2, 2, b"N\x00"),
        (0x0002, 5, 3, _rationals((1, 0), (0, 0), (0xFFFFFFFF, 1))),
        (0x0003, 2, 2, b"W\x00"),
        (0x0004, 5, 1, _rationals((5, 0))),
    ]
    yield "gps-zero-denominators", tiff_block([[make, (0x8825, 4, 1, 26 + 6)], gps])
    yield "make-invalid-utf8", tiff_block([[(0x010F, 2, 9, b"\xff\xfe\x00\x80\xc3(\x00\x00\x00")]])
    yield (
        "makernote-1MB",
        tiff_block([[make, (0x8769, 4, 1, 26 + 6)], [(0x927C, 7, 1 << 20, b"\xaa" * (1 << 20))]]),
    )
    yield "big-endian-garbage", b"MM\x00*\x00\x00\x00\x08" + b"\xff" * 512


def jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """Insert an APP1 segment (``payload`` after the marker and length) right after SOI."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def exif_mutations(image: Image.Image) -> Iterator[tuple[str, str, bytes]]:
    """(label, extension, bytes) of images carrying hostile metadata."""
    plain = encode(image, "JPEG", quality=85)
    png = encode(image, "PNG")
    tiff = encode(image, "TIFF")
    webp = encode(image, "WEBP", quality=80)
    for label, block in hostile_exif_blocks():
        exif = b"Exif\x00\x00" + block
        if len(exif) <= 65533:
            yield f"exif/jpeg-{label}", ".jpg", jpeg_with_app1(plain, exif)
        yield f"exif/png-{label}", ".png", png_insert(png, b"IDAT", png_chunk(b"eXIf", block))
    yield "exif/jpeg-app1-65533B", ".jpg", jpeg_with_app1(plain, b"Exif\x00\x00" + b"\x00" * 65527)
    yield (
        "exif/jpeg-app1-x40",
        ".jpg",
        plain[:2] + (b"\xff\xe1\xff\xff" + b"Exif\x00\x00" + b"\x11" * 65527) * 40 + plain[2:],
    )
    yield "exif/jpeg-app1-length-past-end", ".jpg", plain[:2] + b"\xff\xe1\xff\xf0Exif\x00\x00II*\x00"
    yield (
        "exif/png-exif-8MB",
        ".png",
        png_insert(png, b"IDAT", png_chunk(b"eXIf", b"II*\x00\x08\x00\x00\x00" + b"\x00" * (8 << 20))),
    )
    yield "exif/png-exif-twice", ".png", png_insert(png, b"IDAT", png_chunk(b"eXIf", b"MM\x00*") * 2)
    yield "exif/tiff-exif-ifd-loop", ".tif", _add_tiff_tag(tiff, 0x8769, 4, 1, 8)
    yield "exif/tiff-gps-ifd-outside", ".tif", _add_tiff_tag(tiff, 0x8825, 4, 1, 0x7FFFFFF0)
    vp8x = vp8x_header(image.width, image.height, 0x08)
    exif_chunk = b"EXIF" + struct.pack("<I", 0xFFFFFFF0) + b"II*\x00\x08\x00\x00\x00"
    yield "exif/webp-exif-length-past-end", ".webp", riff(vp8x + webp[12:] + exif_chunk)
    block = tiff_block([[(0x010F, 2, 64, 0x7FFFFFF0)]], links=[8])
    yield (
        "exif/webp-exif-loop",
        ".webp",
        riff(vp8x + webp[12:] + b"EXIF" + struct.pack("<I", len(block)) + block),
    )


# --- image corpus ----------------------------------------------------------------------------------
Mutator = Callable[[bytes], Iterator[tuple[str, bytes]]]


def image_corpus(seed: int = 0) -> list[HostileFile]:
    """Every supported format, its seeds (valid, accepted) and several hundred mutations of them."""
    rng = random.Random(seed)
    photos = seed_images(96)
    small = [photo(name, 48) for name in SEED_PHOTOS[:2]]
    files: list[HostileFile] = []

    def add(fmt: str, label: str, ext: str, data: bytes) -> None:
        slug = "".join(c if c.isalnum() or c in "-=@x%" else "_" for c in label)
        files.append(HostileFile(f"{fmt}/{len(files):04d}-{slug}{ext}", data, f"{fmt}/{label}"))

    # the first photo in every format gets every mutation; the second only its original and bit flips
    formats: list[tuple[str, str, bytes, Mutator | None]] = []
    for index, image in enumerate(photos[:2]):
        suffix = f"-{SEED_PHOTOS[index]}" if index else ""
        formats += [
            (f"jpeg{suffix}", ".jpg", encode(image, "JPEG", quality=85), jpeg_mutations),
            (
                f"jpeg-progressive{suffix}",
                ".jpg",
                encode(image, "JPEG", quality=85, progressive=True),
                jpeg_mutations,
            ),
            (f"png{suffix}", ".png", encode(image, "PNG"), png_mutations),
            (f"webp-lossy{suffix}", ".webp", encode(image, "WEBP", quality=80), webp_mutations),
            (f"webp-lossless{suffix}", ".webp", encode(image, "WEBP", lossless=True), webp_mutations),
            (f"bmp{suffix}", ".bmp", encode(image, "BMP"), bmp_mutations),
            (f"tiff{suffix}", ".tif", encode(image, "TIFF"), tiff_mutations),
            (f"tiff-lzw{suffix}", ".tif", encode(image, "TIFF", compression="tiff_lzw"), tiff_mutations),
            (f"gif{suffix}", ".gif", encode(image, "GIF"), gif_mutations),
        ]
    frames = _frames(small[0], 4)
    formats += [
        ("gif-animated", ".gif", animated(frames, "GIF"), gif_mutations),
        ("webp-animated", ".webp", animated(frames, "WEBP"), webp_mutations),
        ("apng", ".png", animated(frames, "PNG"), apng_mutations),
    ]
    for fmt, ext, data, mutate in formats:
        add(fmt, "original", ext, data)
        for flips in (1, 8, 64):
            add(fmt, f"bitflip-x{flips}-seed{seed}", ext, bit_flips(data, rng, flips, start=16))
        if fmt.endswith(tuple(f"-{name}" for name in SEED_PHOTOS[1:])):
            continue
        for label, cut in truncations(data):
            add(fmt, label, ext, cut)
        if mutate is not None:
            for label, mutated in mutate(data):
                add(fmt, label, ext, mutated)
    # formats without a header to speak of, and files that are only headers
    add("gif-animated", "frames=100000", ".gif", many_frame_gif(100_000))
    add("png", "blank-9000x9000-grey", ".png", blank_png(9000, 9000))  # 81 MP: within max_pixels
    add("png", "blank-5000x5000-rgba16", ".png", blank_png(5000, 5000, depth=16, colour=6))  # 200 MB decoded
    add("png", "blank-20000x20000", ".png", blank_png(20000, 20000))  # 400 MP: a bomb in 400 KB
    add("webp", "vp8x-only-canvas=2^24x2^24", ".webp", riff(vp8x_header(1 << 24, 1 << 24)))
    add("misc", "empty", ".jpg", b"")
    add("misc", "zeros-1MB", ".png", b"\x00" * (1 << 20))
    add("misc", "random-64KB", ".jpg", bytes(rng.randrange(256) for _ in range(65536)))
    add("misc", "text-as-jpg", ".jpg", b"not an image at all\n" * 10)
    add("misc", "png-extension-jpeg-bytes", ".png", encode(photos[0], "JPEG"))
    add("misc", "no-extension", "", encode(photos[1], "PNG"))
    for label, ext, data in exif_mutations(photos[2]):
        fmt, _, rest = label.partition("/")
        add(fmt, rest, ext, data)
    return files


# --- videos ----------------------------------------------------------------------------------------
def encode_video(
    fmt: str, codec: str, *, size: tuple[int, int] = (64, 48), frames: int = 30, rate: int = 10
) -> bytes:
    """A short real video of a scikit-image photo panning, written with PyAV."""
    import av
    import numpy as np

    width, height = size
    source = np.asarray(photo("chelsea", 2 * max(size)).convert("RGB"))
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if codec != "ffv1" else "yuv444p"
        if codec in ("libx264", "h264"):
            stream.options = {"preset": "ultrafast"}
        for index in range(frames):
            x = index % max(1, source.shape[1] - width)
            crop = np.ascontiguousarray(source[:height, x : x + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def mux_packets(
    fmt: str,
    codec: str,
    packets: list[bytes],
    *,
    size: tuple[int, int],
    pts: list[int] | None = None,
    time_base: Fraction = Fraction(1, 10),
    pix_fmt: str = "rgb24",
) -> bytes:
    """A container of already-encoded packets (PNG images for the png codec) with chosen timestamps."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=10)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        stream.time_base = time_base
        for index, data in enumerate(packets):
            packet = av.Packet(data)
            packet.stream = stream
            packet.pts = packet.dts = (pts or list(range(len(packets))))[index]
            packet.duration = 1
            packet.is_keyframe = True
            out.mux(packet)
    return buffer.getvalue()


def png_frame(width: int, height: int, *, colour: int = 2) -> bytes:
    return blank_png(width, height, colour=colour)


def bomb_mov(side: int = 16000) -> bytes:
    """A MOV of one ``side`` x ``side`` RGB PNG frame: about 750 KB that decode to 768 MB per frame."""
    return mux_packets("mov", "png", [png_frame(side, side)], size=(side, side))


def growing_mov(side: int = 12000) -> bytes:
    """A MOV declaring 64x48 whose third frame is ``side`` x ``side`` (grey): the size changes mid-stream."""
    frames = [png_frame(64, 48), png_frame(64, 48), png_frame(side, side, colour=0)]
    return mux_packets("mov", "png", frames, size=(64, 48))


def timestamp_jump_mkv() -> bytes:
    """FFV1 frames at 0 s, 0.1 s, then ~10^14 s (the muxer rescales the jump) and just after."""
    import av
    import numpy as np

    jump = 10**15  # milliseconds
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=10)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv444p"
        stream.time_base = Fraction(1, 1000)
        grey = np.full((48, 64, 3), 128, dtype=np.uint8)
        packets = []
        for index in range(4):
            grey[:, index * 8 : index * 8 + 8] = 255
            packets += stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24"))
        packets += stream.encode()
        for packet, pts in zip(packets, (0, 100, jump, jump + 100), strict=False):
            packet.pts = packet.dts = pts
            out.mux(packet)
    return buffer.getvalue()


def _ebml_patch_uint(data: bytes, element: bytes, value: int) -> bytes:
    """Overwrite every unsigned-integer EBML element with id ``element`` by ``value`` (same width)."""
    out = bytearray(data)
    start = 0
    while (at := out.find(element, start)) >= 0:
        size_byte = out[at + len(element)]
        if size_byte & 0x80:  # a one-byte size vint
            width = size_byte & 0x7F
            if 1 <= width <= 8 and value < 1 << (8 * width):
                out[at + len(element) + 1 : at + len(element) + 1 + width] = value.to_bytes(width, "big")
        start = at + 1
    return bytes(out)


def declared_bomb_mkv() -> bytes:
    """An FFV1 MKV of 256x256 frames whose track header declares 16000x16000 (the decoder trusts it)."""
    data = encode_video("matroska", "ffv1", size=(256, 256), frames=3)
    data = _ebml_patch_uint(data, b"\xb0", 16000)  # PixelWidth
    return _ebml_patch_uint(data, b"\xba", 16000)  # PixelHeight


def _mp4_box(data: bytes, kind: bytes) -> int:
    at = data.find(kind)
    if at < 4:
        raise ValueError(f"no {kind!r} box")
    return at - 4


def mp4_mutations(data: bytes) -> Iterator[tuple[str, bytes]]:
    mdhd = _mp4_box(data, b"mdhd")
    yield "mdhd-timescale=0", _patch(data, mdhd + 20, ">I", 0)
    yield "mdhd-duration=2^32-1", _patch(data, mdhd + 24, ">I", 0xFFFFFFFF)
    mvhd = _mp4_box(data, b"mvhd")
    yield "mvhd-timescale=0", _patch(data, mvhd + 20, ">I", 0)
    stsz = _mp4_box(data, b"stsz")
    yield "stsz-count=2^32-1", _patch(data, stsz + 16, ">I", 0xFFFFFFFF)
    stts = _mp4_box(data, b"stts")
    yield "stts-delta=0", _patch(data, stts + 20, ">I", 0)
    yield "stts-count=2^32-1", _patch(data, stts + 16, ">II", 0xFFFFFFFF, 1)
    yield "stts-entries=2^32-1", _patch(data, stts + 12, ">I", 0xFFFFFFFF)
    stco = _mp4_box(data, b"stco")
    yield "stco-offset-outside", _patch(data, stco + 16, ">I", 0xFFFFFFF0)
    tkhd = _mp4_box(data, b"tkhd")
    yield "tkhd-size=16000x16000", _patch(data, tkhd + 84, ">II", 16000 << 16, 16000 << 16)
    avc1 = _mp4_box(data, b"avc1") if b"avc1" in data else _mp4_box(data, b"mp4v")
    yield "sample-entry-size=65535x65535", _patch(data, avc1 + 32, ">HH", 65535, 65535)
    yield "moov-size=2^32-1", _patch(data, _mp4_box(data, b"moov"), ">I", 0xFFFFFFFF)
    yield "mdat-size=2", _patch(data, _mp4_box(data, b"mdat"), ">I", 2)


def video_corpus(seed: int = 0) -> list[HostileFile]:
    """Real videos (kept: their frames are accepted), their mutations, and crafted hostile containers."""
    rng = random.Random(seed)
    files: list[HostileFile] = []

    def add(fmt: str, label: str, ext: str, data: bytes) -> None:
        slug = "".join(c if c.isalnum() or c in "-=@x%^" else "_" for c in label)
        files.append(HostileFile(f"{fmt}/{len(files):03d}-{slug}{ext}", data, f"{fmt}/{label}"))

    h264 = encode_video("mp4", "libx264")
    mpeg4 = encode_video("mp4", "mpeg4")
    ffv1 = encode_video("matroska", "ffv1")
    for fmt, ext, data, mutate in (
        ("mp4-h264", ".mp4", h264, mp4_mutations),
        ("mp4-mpeg4", ".mp4", mpeg4, mp4_mutations),
        ("mkv-ffv1", ".mkv", ffv1, None),
    ):
        add(fmt, "original", ext, data)
        for label, cut in truncations(data):
            add(fmt, label, ext, cut)
        for flips in (1, 8, 64, 512):
            add(fmt, f"bitflip-x{flips}-seed{seed}", ext, bit_flips(data, rng, flips, start=8))
        if mutate is not None:
            for label, mutated in mutate(data):
                add(fmt, label, ext, mutated)
    add("crafted", "png-frames-16000x16000", ".mov", bomb_mov())
    add("crafted", "declares-16000x16000", ".mkv", declared_bomb_mkv())
    add("crafted", "frame-grows-to-12000x12000", ".mov", growing_mov())
    add("crafted", "timestamps-jump-10^14s", ".mkv", timestamp_jump_mkv())
    add("crafted", "mp4-cut-before-mdat", ".mp4", h264[: _mp4_box(h264, b"mdat")])
    add("crafted", "image-bytes-as-mp4", ".mp4", encode(photo("coffee", 64), "JPEG"))
    add("crafted", "ftyp-only", ".mp4", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2")
    add("crafted", "ebml-only", ".mkv", b"\x1a\x45\xdf\xa3" + b"\x9f" + b"\x00" * 31)
    return files
