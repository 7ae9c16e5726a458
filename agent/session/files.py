"""The files of a session: ids that cannot escape the sessions folder, lossless PNGs (so a chain of
edits stays bit-identical outside its masks), fsync, pixel digests.

Images are stored as 8-bit RGB PNG and masks as 8-bit grayscale PNG, quantised the way the run
folder's records are (``round(x * 255)``), so a checkpoint read back and re-recorded by a run gives
the same bytes of pixels.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InvalidSessionId, SessionError, SessionStorageError

SESSION_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_SESSION_ID = re.compile(rf"^{SESSION_ID_PATTERN}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
FAST_PNG = 1  # zlib level for PNGs the store encodes itself: 1 is several times faster than 6, a little larger


def check_session_id(session_id) -> str:
    """The id itself, or ``InvalidSessionId``: letters, digits, '_' and '-', at most 64, no path."""
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        shown = repr(session_id)[:80]
        raise InvalidSessionId(f"session id {shown} is not valid: use 1 to 64 letters, digits, '_' or '-', "
                               "starting with a letter or digit (no '/', '.' or spaces)")
    return session_id


def new_session_id() -> str:
    return f"s{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"


def new_token() -> str:
    return uuid.uuid4().hex


def check_file_name(name: str, where: str) -> str:
    """A plain file name from a run record (never a path)."""
    if not isinstance(name, str) or not _FILE_NAME.fullmatch(name) or name in (".", ".."):
        raise SessionError(f"{where}: {name!r} is not a plain file name")
    return name


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that resolves outside ``root`` (a tampered database)."""
    path = (root / relative).resolve()
    base = root.resolve()
    if path != base and base not in path.parents:
        raise SessionError(f"the stored path {relative!r} leaves the session folder; the database was edited by hand")
    return path


# --- pixels -----------------------------------------------------------------------------------
def to_rgb8(image, name: str = "image") -> np.ndarray:
    """An image as uint8 [H, W, 3]: a float array 0..1 ([H, W, C] or a batch of one), a uint8 array,
    a PIL image or a path to an image file. Alpha is dropped; grey is expanded."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise SessionError(f"{name}: no file at {path}")
        with Image.open(path) as opened:
            return np.asarray(opened.convert("RGB"))
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or 0 in array.shape[:2]:
        raise SessionError(f"{name}: expected an image [H, W, 3] (or one image of a batch), got shape {array.shape}")
    array = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise SessionError(f"{name}: expected float pixels 0..1 or uint8, got {array.dtype}")
    return np.clip(np.rint(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as opened:
        return np.asarray(opened if opened.mode == "RGB" else opened.convert("RGB"))


def read_gray(path: Path) -> np.ndarray:
    """A mask file as uint8 [H, W] (an RGB mask is read by its first channel)."""
    with Image.open(path) as opened:
        if opened.mode == "L":
            return np.asarray(opened)
        if opened.mode in ("1", "P", "LA", "I", "I;16", "F"):
            return np.asarray(opened.convert("L"))
        return np.asarray(opened.convert("RGB"))[..., 0]


def write_png(path: Path, pixels: np.ndarray) -> int:
    """Writes and fsyncs a PNG (RGB or grayscale from the array's shape); returns its size."""
    with open(path, "wb") as handle:
        Image.fromarray(pixels).save(handle, format="PNG", compress_level=FAST_PNG)
        handle.flush()
        os.fsync(handle.fileno())
    return path.stat().st_size


def copy_file(source: Path, target: Path) -> int:
    shutil.copyfile(source, target)
    return target.stat().st_size


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Makes a rename or a new file in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def pixel_digest(pixels: np.ndarray) -> str:
    """Identifies pixels whatever the file encoding: shape and bytes."""
    digest = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}".encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def storage_error(exc: OSError, doing: str, unchanged: str) -> SessionStorageError:
    """An ``OSError`` while writing, as a message the user can act on."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return SessionStorageError(f"the disk is full while {doing}; free some space (or set a retention limit "
                                   f"for session files) and try again; {unchanged}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return SessionStorageError(f"cannot write while {doing} ({exc.strerror}: {exc.filename}); check the "
                                   f"folder's permissions; {unchanged}")
    return SessionStorageError(f"writing failed while {doing} ({exc}); {unchanged}")
