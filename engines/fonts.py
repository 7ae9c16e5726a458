"""Which fonts the text tools can draw with, and loading them.

The built-in family is DejaVu (open licence, wide Latin/Greek/Cyrillic coverage), which the
``matplotlib`` package ships in ``mpl-data/fonts/ttf``: a dependency the pack already has, so no
font file travels with the pack. Users add their own ``.ttf`` / ``.otf`` / ``.ttc`` files to a
fonts folder (ComfyUI's ``models/fonts``); this module never imports ComfyUI, so callers pass
those folders in as ``extra_dirs``.

Choice names: a built-in font is its file stem (``"DejaVuSans-Bold"``); a user font is its path
relative to the fonts folder it was found in, with forward slashes (``"Noto/NotoSansJP.otf"``);
an absolute path to a font file is accepted too.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

from PIL import ImageFont

log = logging.getLogger(__name__)

DEFAULT_FONT = "DejaVuSans"
FONT_EXTENSIONS = (".ttf", ".otf", ".ttc")

# DejaVu faces as matplotlib ships them, in the order a font menu should show them. The
# "Display" variants are left out: matplotlib ships them with only a handful of glyphs.
_BUILTIN_STEMS = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
)


class FontError(ValueError):
    """A font that cannot be found or read; the message names it and where fonts are looked for."""


@functools.lru_cache(maxsize=1)
def builtin_font_dir() -> Path | None:
    """matplotlib's DejaVu folder, or None when matplotlib is not installed.

    ``matplotlib.get_data_path()`` needs only the top-level package (no pyplot, no backend).
    """
    try:
        import matplotlib
    except ImportError:
        log.warning("matplotlib is not installed: the built-in DejaVu fonts are unavailable")
        return None
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return folder if folder.is_dir() else None


def builtin_fonts() -> dict[str, Path]:
    """Built-in choice name -> font file, for the DejaVu faces present on this machine."""
    folder = builtin_font_dir()
    if folder is None:
        return {}
    return {stem: folder / f"{stem}.ttf" for stem in _BUILTIN_STEMS if (folder / f"{stem}.ttf").is_file()}


def _user_fonts(extra_dirs: Iterable[str | os.PathLike]) -> dict[str, Path]:
    """Choice name (path relative to its folder) -> file, for every font file under ``extra_dirs``.
    The first folder that holds a name wins, as in ComfyUI's own model folders."""
    found: dict[str, Path] = {}
    for folder in extra_dirs:
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in FONT_EXTENSIONS and path.is_file():
                found.setdefault(path.relative_to(root).as_posix(), path)
    return found


def available_fonts(extra_dirs: Sequence[str | os.PathLike] = ()) -> list[str]:
    """Choice names: the built-in DejaVu faces first (the default first of all), then user fonts."""
    names = list(builtin_fonts())
    names += [name for name in _user_fonts(extra_dirs) if name not in names]
    return names


def search_locations(extra_dirs: Sequence[str | os.PathLike] = ()) -> list[str]:
    """Where fonts are looked for, for error messages."""
    folder = builtin_font_dir()
    places = [str(folder) if folder else "matplotlib's DejaVu fonts (matplotlib is not installed)"]
    places += [str(d) for d in extra_dirs]
    return places


def resolve_font(choice: str, extra_dirs: Sequence[str | os.PathLike] = ()) -> Path:
    """The font file of a choice name or an absolute path; FontError when there is none."""
    if not isinstance(choice, str) or not choice.strip():
        raise FontError(f"font: expected a font name such as {DEFAULT_FONT!r}, got {choice!r}")
    choice = choice.strip()
    builtin = builtin_fonts()
    if choice in builtin:
        return builtin[choice]
    candidate = Path(choice).expanduser()
    if candidate.is_absolute():
        if candidate.is_file():
            return candidate
        raise FontError(f"font file not found: {candidate}")
    user = _user_fonts(extra_dirs)
    if choice in user:
        return user[choice]
    raise FontError(
        f"font {choice!r} not found. Fonts are looked for in: {'; '.join(search_locations(extra_dirs))}. "
        f"Put a .ttf, .otf or .ttc file in ComfyUI's models/fonts folder, or pick one of "
        f"{available_fonts(extra_dirs)[:8]}")


def load_font(choice: str, size: int, extra_dirs: Sequence[str | os.PathLike] = ()) -> ImageFont.FreeTypeFont:
    """A FreeType font of ``choice`` at ``size`` pixels (cached per file and size)."""
    size = int(size)
    if size < 1:
        raise FontError(f"font size must be at least 1 pixel, got {size}")
    return _load_file(str(resolve_font(choice, extra_dirs)), size)


@functools.lru_cache(maxsize=512)
def _load_file(path: str, size: int) -> ImageFont.FreeTypeFont:
    # The fitter asks for ~10 sizes of one font per box; FreeType faces are cheap to keep.
    try:
        return ImageFont.truetype(path, size)
    except (OSError, ValueError) as exc:
        raise FontError(f"{path} is not a readable font file ({exc}); use a .ttf, .otf or .ttc font") from None


@functools.lru_cache(maxsize=64)
def _covered_codepoints(path: str) -> frozenset[int] | None:
    """Every code point the font has a glyph for, or None when that cannot be read."""
    try:
        from fontTools.ttLib import TTFont  # a matplotlib dependency
    except ImportError:
        return None
    try:
        with TTFont(path, fontNumber=0, lazy=True) as font:
            return frozenset(font.getBestCmap() or {})
    except Exception as exc:  # fontTools raises many kinds; coverage is only advisory
        log.debug("cannot read the character map of %s: %s", path, exc)
        return None


def missing_characters(font: ImageFont.FreeTypeFont, text: str) -> str:
    """The distinct characters of ``text`` the font has no glyph for (whitespace ignored), in order.

    Such characters are still drawn, as the font's missing-glyph box: the text tool warns about
    them rather than failing, so a partly covered text still comes out.
    """
    path = getattr(font, "path", None)
    covered = _covered_codepoints(str(path)) if path else None
    if covered is None:
        return ""
    missing: list[str] = []
    for char in text:
        if not char.isspace() and ord(char) not in covered and char not in missing:
            missing.append(char)
    return "".join(missing)
