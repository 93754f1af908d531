"""Helpers of the data tests: files of rows, and images that are good, empty or corrupt."""

import io
import json
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
