"""Helpers of the data tests: files of rows, and images that are good, empty or corrupt."""

import io
import json
import struct
import zlib
from pathlib import Path

import PIL.Image
import pytest


def png_bytes(color=(200, 30, 30), size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    PIL.Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_jsonl(path: Path, rows: list) -> Path:
    """rows: dicts (dumped) or strings (written as they are: malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def images(tmp_path) -> dict[str, Path]:
    """good.png, empty.png (0 bytes) and corrupt.png (not an image) in tmp_path/img."""
    folder = tmp_path / "img"
    folder.mkdir()
    (folder / "good.png").write_bytes(png_bytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    return {name: folder / f"{name}.png" for name in ("good", "empty", "corrupt")}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bilevel_png(width: int, height: int) -> bytes:
    """A real PNG of one colour, 1 bit per pixel, written chunk by chunk: 20000x20000 (400M pixels, a decompression
    bomb to PIL) is ~50 KB on disk and written in well under a second, with no 400 MB image in memory (which PIL
    would need to write it). Width or height 0 gives a PNG whose header says zero size."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale, no interlace
    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)  # filter byte + the packed bits
    block = 1000
    body = [packer.compress(row * min(block, height - y)) for y in range(0, height, block)] + [packer.flush()]
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(body))
            + _png_chunk(b"IEND", b""))


BOMB_SIZE = (20000, 20000)


@pytest.fixture(scope="session")
def bomb_bytes() -> bytes:
    """A 20000x20000 PNG (400M pixels, over PIL's 2 x 89.5M refusal limit) of ~50 KB."""
    return bilevel_png(*BOMB_SIZE)
