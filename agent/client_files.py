"""Files between a program and ComfyUI: references to server files (``{filename, subfolder, type}``,
what ``/history`` lists and ``/view`` serves) and checked local inputs for ``/upload/image``."""

from __future__ import annotations

import hashlib
import io
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .client_errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class FileRef:
    """A file on the server: its name, its subfolder and which root it is under (output/input/temp)."""

    filename: str
    subfolder: str = ""
    type: str = "output"

    @classmethod
    def from_dict(cls, entry: dict) -> "FileRef":
        return cls(entry["filename"], entry.get("subfolder", "") or "", entry.get("type", "output") or "output")

    @property
    def path(self) -> str:
        """``type/subfolder/filename``, for messages."""
        return str(PurePosixPath(self.type, self.subfolder, self.filename))

    def query(self) -> str:
        return urllib.parse.urlencode({"filename": self.filename, "subfolder": self.subfolder, "type": self.type})

    def sibling(self, filename: str) -> "FileRef":
        return FileRef(filename, self.subfolder, self.type)


def check_image_file(path: str | os.PathLike, what: str = "input image") -> Path:
    """``path`` as a Path when it is a readable image file; ``BadInput`` saying what is wrong otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInput(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise BadInput(f"{what} {str(path)!r} is not a file")
    _check_image_data(path.read_bytes(), f"{what} {str(path)!r}")
    return path


def _check_image_data(data: bytes, what: str) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInput(f"{what} is not an image Pillow can read ({type(exc).__name__}: {exc}); "
                       f"give a PNG, JPEG or WebP file") from None


def image_bytes(image) -> tuple[bytes, str]:
    """The bytes of an image given as a path or as raw bytes, checked, and a name for it."""
    if isinstance(image, (bytes, bytearray)):
        _check_image_data(bytes(image), "the image data")
        return bytes(image), "image.png"
    path = check_image_file(image)
    return path.read_bytes(), path.name


def upload_name(data: bytes, original: str) -> str:
    """A safe input-folder name that carries the content hash: the same picture always has the
    same name (ComfyUI's cache keys on it), two different pictures never clash."""
    stem, suffix = os.path.splitext(os.path.basename(original))
    suffix = suffix.lower() if suffix.lower() in IMAGE_SUFFIXES else ".png"
    stem = _UNSAFE.sub("_", stem).strip("._")[:40] or "image"
    return f"agentic_edit_{stem}_{hashlib.sha1(data).hexdigest()[:10]}{suffix}"


def multipart_image_body(name: str, data: bytes) -> tuple[bytes, str]:
    """The ``POST /upload/image`` body for ``data`` stored as ``name`` (overwriting), and its
    Content-Type header."""
    import uuid

    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue"
            f"\r\n--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}"

