"""Model choice -> files on disk.

A choice (what a combo widget or a plan names) is one of:

* a registered spec key ("Qwen2.5-VL-7B-Instruct"), looked up in the spec's model folder as a
  sub-folder or file named after the key, the repo's last path component, or a Hugging Face
  cache folder (``models--owner--name/snapshots/<rev>``);
* a name found in one of the family's model folders (file or sub-folder, e.g. "my-finetune");
* a local path (absolute or starting with ``~``);
* a Hugging Face repo id ("owner/name"), downloaded once into the matching model folder.

Downloads use ``huggingface_hub.snapshot_download(local_dir=...)``, which resumes an interrupted
download and skips files already there. They are off when ``HF_HUB_OFFLINE`` or
``AGENTIC_EDIT_NO_DOWNLOAD`` is set; then a missing model raises one ``ModelNotFoundError`` that
says which files to put in which folder.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .paths import download_dir, folder_dirs
from .registry import WEIGHT_FILE_SUFFIXES, ModelSpec, family_folders, get_spec, specs_for

log = logging.getLogger(__name__)

NO_DOWNLOAD_ENV = "AGENTIC_EDIT_NO_DOWNLOAD"
_TRUE = {"1", "true", "yes", "on"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_GLOB_CHARS = set("*?[")
_download_lock = threading.Lock()


class ModelNotFoundError(ValueError):
    """A model choice that cannot be turned into complete files on disk.

    The message names the files, the folder to put them in, and where to download them from.
    """

    def __init__(self, message: str, *, choice: str = "", family: str = "", missing: tuple[str, ...] = (),
                 folder: Path | None = None, repo_id: str | None = None):
        super().__init__(message)
        self.choice = choice
        self.family = family
        self.missing = tuple(missing)
        self.folder = folder
        self.repo_id = repo_id


@dataclass(frozen=True)
class ResolvedModel:
    path: Path                                  # the model's folder, or its file for a single-file model
    spec: ModelSpec | None                      # None for a name or path the registry does not know
    source: Literal["folder", "path", "hub"]    # found in a model folder, given as a path, downloaded now
    choice: str = ""
    family: str = ""


def downloads_allowed() -> tuple[bool, str]:
    """(allowed, why not)."""
    for var in ("HF_HUB_OFFLINE", NO_DOWNLOAD_ENV):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return False, f"downloads are off because {var}={os.environ[var]}"
    return True, ""


# ---- files present --------------------------------------------------------------------------

def missing_files(path: Path, patterns: tuple[str, ...]) -> list[str]:
    """The patterns (names or globs relative to ``path``) that match nothing under ``path``."""
    missing = []
    for pattern in patterns:
        if _GLOB_CHARS & set(pattern):
            found = any(p.is_file() for p in path.glob(pattern))
        else:
            found = (path / pattern).exists()
        if not found:
            missing.append(pattern)
    return missing


def _spec_missing(spec: ModelSpec, path: Path) -> list[str]:
    if spec.is_single_file:
        return [] if path.is_file() else [spec.key]
    if not path.is_dir():
        return list(spec.required_files) or ["(a folder of model files)"]
    return missing_files(path, spec.required_files)


def _hf_cache_snapshot(cache_dir: Path) -> Path | None:
    """The snapshot folder of a Hugging Face cache entry (``models--owner--name``)."""
    snapshots = cache_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = cache_dir / "refs" / "main"
    if ref.is_file():
        pinned = snapshots / ref.read_text().strip()
        if pinned.is_dir():
            return pinned
    revisions = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return revisions[-1] if revisions else None


def _inside(parent: Path, name: str) -> Path | None:
    """``parent/name`` unless ``name`` escapes ``parent`` (".." or an absolute part)."""
    candidate = Path(os.path.normpath(parent / name))
    try:
        candidate.relative_to(os.path.normpath(parent))
    except ValueError:
        return None
    return candidate


def _candidates(directory: Path, name: str) -> list[Path]:
    """Where a model called ``name`` (a key, a relative name or a repo id) may sit in ``directory``."""
    found = []
    direct = _inside(directory, name)
    if direct is not None and direct.exists():
        found.append(direct)
    if _REPO_ID.match(name):
        owner, repo = name.split("/")
        snapshot = _hf_cache_snapshot(directory / f"models--{owner}--{repo}")
        if snapshot is not None:
            found.append(snapshot)
        last = directory / repo
        if last.exists():
            found.append(last)
    return found


# ---- errors ---------------------------------------------------------------------------------

def _not_found(choice: str, family: str, spec: ModelSpec | None, *, folder_key: str | None,
               missing: list[str] | None = None, target: Path | None = None, reason: str = "",
               repo_id: str | None = None) -> ModelNotFoundError:
    repo_id = repo_id or (spec.repo_id if spec else None)
    lines = []
    if missing and target is not None and target.exists():
        lines.append(f"Model {choice!r} ({family}) is incomplete: {target} lacks {', '.join(missing)}.")
    else:
        lines.append(f"Model {choice!r} ({family}) was not found.")
    if spec is not None:
        files = spec.key if spec.is_single_file else (", ".join(spec.required_files) or "the model's files")
        where = target or (download_dir(spec.folder) / ("" if spec.is_single_file else spec.key))
        lines.append(f"Put {files} in {where} (ComfyUI model folder {spec.folder!r}).")
    elif target is not None:
        lines.append(f"Put the model's files in {target}.")
    if folder_key is not None:
        searched = ", ".join(str(d) for d in folder_dirs(folder_key))
        lines.append(f"Searched the {folder_key!r} model folders: {searched}.")
    if repo_id:
        size = f", about {spec.size_gb:g} GB" if spec and spec.size_gb else ""
        lines.append(f"Download from https://huggingface.co/{repo_id}{size}" +
                     (f" ({reason})." if reason else "."))
    elif reason:
        lines.append(reason[0].upper() + reason[1:] + ".")
    if spec is not None and spec.gated:
        lines.append(f"The repo is gated: accept its licence at https://huggingface.co/{spec.repo_id} and log in "
                     "(`hf auth login`, or set HF_TOKEN) before downloading.")
    if spec is not None and spec.licence:
        lines.append(f"Licence: {spec.licence}.")
    if spec is not None and spec.notes:
        lines.append(spec.notes)
    return ModelNotFoundError(" ".join(lines), choice=choice, family=family, missing=tuple(missing or ()),
                              folder=target, repo_id=repo_id)


# ---- downloading ----------------------------------------------------------------------------

def _hub_errors():
    try:
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # huggingface_hub < 0.23 kept them in utils
        from huggingface_hub.utils import GatedRepoError, RepositoryNotFoundError
    return GatedRepoError, RepositoryNotFoundError


def _download(repo_id: str, local_dir: Path, patterns: tuple[str, ...] | None, *, choice: str, family: str,
              spec: ModelSpec | None, folder_key: str) -> None:
    allowed, why = downloads_allowed()
    if not allowed:
        raise _not_found(choice, family, spec, folder_key=folder_key, target=local_dir, reason=why,
                         repo_id=repo_id, missing=list(spec.required_files) if spec else None)
    from huggingface_hub import snapshot_download

    GatedRepoError, RepositoryNotFoundError = _hub_errors()
    size = f" (about {spec.size_gb:g} GB)" if spec and spec.size_gb else ""
    log.info("downloading %s%s into %s", repo_id, size, local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    try:
        snapshot_download(repo_id=repo_id, local_dir=str(local_dir),
                          allow_patterns=list(patterns) if patterns else None)
    except GatedRepoError as exc:
        raise ModelNotFoundError(
            f"Model {choice!r} ({family}): https://huggingface.co/{repo_id} is gated. Accept its licence on that "
            "page with your Hugging Face account, then log in on this machine (`hf auth login`, or set HF_TOKEN) "
            f"and run again; or put the files in {local_dir} yourself.",
            choice=choice, family=family, folder=local_dir, repo_id=repo_id) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            f"Model {choice!r} ({family}): no Hugging Face repo {repo_id!r} (or it is private: log in with "
            f"`hf auth login`). Check the name, or put the files in {local_dir}.",
            choice=choice, family=family, folder=local_dir, repo_id=repo_id) from exc
    except Exception as exc:  # network, disk, HTTP: one clear error instead of a library traceback
        raise _not_found(choice, family, spec, folder_key=folder_key, target=local_dir, repo_id=repo_id,
                         reason=f"the download failed: {type(exc).__name__}: {exc}; run again to resume") from exc


# ---- resolution -----------------------------------------------------------------------------

def _spec_for_choice(choice: str, family: str) -> ModelSpec | None:
    spec = get_spec(choice)
    if spec is not None:
        if spec.family != family:
            raise ModelNotFoundError(
                f"Model {choice!r} is a {spec.family} model; this needs a {family} model "
                f"(one of: {', '.join(available_choices(family)) or 'none installed'}).",
                choice=choice, family=family)
        return spec
    for spec in specs_for(family):
        if spec.repo_id and choice in (spec.repo_id, f"models--{spec.repo_id.replace('/', '--')}"):
            return spec
    return None


def _resolve_spec(spec: ModelSpec, choice: str, family: str) -> ResolvedModel:
    names = [spec.key]
    if spec.repo_id:
        names.append(spec.repo_id)  # matches "owner/name" sub-folders and HF cache folders
    incomplete: tuple[Path, list[str]] | None = None
    for directory in folder_dirs(spec.folder):
        for name in names:
            for candidate in _candidates(directory, name):
                missing = _spec_missing(spec, candidate)
                if not missing:
                    return ResolvedModel(candidate, spec, "folder", choice, family)
                if incomplete is None:
                    incomplete = (candidate, missing)
    if spec.repo_id is None:
        target, missing = incomplete or (None, None)
        raise _not_found(choice, family, spec, folder_key=spec.folder, missing=missing, target=target,
                         reason="this model is not downloadable: it has no Hugging Face repo")

    # Resume into an incomplete copy that is a plain folder (not a HF cache entry); else the default.
    if incomplete is not None and incomplete[0].is_dir() and "snapshots" not in incomplete[0].parts:
        target = incomplete[0]
    else:
        target = download_dir(spec.folder) / spec.key
    local_dir = target.parent if spec.is_single_file else target
    allowed, why = downloads_allowed()
    if not allowed:
        missing = incomplete[1] if incomplete else _spec_missing(spec, target)
        raise _not_found(choice, family, spec, folder_key=spec.folder, missing=missing, target=target, reason=why)
    with _download_lock:
        if _spec_missing(spec, target):  # another thread may have finished it meanwhile
            _download(spec.repo_id, local_dir, spec.download_patterns, choice=choice, family=family,
                      spec=spec, folder_key=spec.folder)
        if spec.is_single_file and not target.is_file():
            _adopt_nested_file(local_dir, spec.key)
    missing = _spec_missing(spec, target)
    if missing:
        raise _not_found(choice, family, spec, folder_key=spec.folder, missing=missing, target=target,
                         reason=f"the download of {spec.repo_id} did not contain them (check the spec's allow_patterns)")
    return ResolvedModel(target, spec, "hub", choice, family)


def _adopt_nested_file(local_dir: Path, name: str) -> None:
    """A single-file download whose file sits in a repo sub-folder: move it to ``local_dir/name``."""
    for path in local_dir.rglob(name):
        if path.is_file() and ".cache" not in path.relative_to(local_dir).parts:
            os.replace(path, local_dir / name)
            return


def _resolve_unregistered(choice: str, family: str) -> ResolvedModel:
    folders = family_folders(family)
    for key in folders:
        for directory in folder_dirs(key):
            for candidate in _candidates(directory, choice):
                return ResolvedModel(candidate, None, "folder", choice, family)
    if not folders:
        raise ModelNotFoundError(
            f"Model {choice!r}: no model folder is known for family {family!r} (no engine registered a spec for it); "
            "pass an absolute path instead.", choice=choice, family=family)
    if not _looks_like_repo_id(choice):
        raise _not_found(choice, family, None, folder_key=folders[0],
                         reason=f"choose one of: {', '.join(available_choices(family)) or 'none installed'}")
    target = download_dir(folders[0]) / choice.split("/")[1]
    with _download_lock:
        if not (target.is_dir() and any(target.iterdir())):
            _download(choice, target, None, choice=choice, family=family, spec=None, folder_key=folders[0])
    return ResolvedModel(target, None, "hub", choice, family)


def _looks_like_repo_id(choice: str) -> bool:
    # "sub/model.safetensors" is a file someone expected in a model folder, not a repo.
    return bool(_REPO_ID.match(choice)) and not choice.lower().endswith(WEIGHT_FILE_SUFFIXES)


def _resolve_path(choice: str, family: str) -> ResolvedModel:
    path = Path(choice).expanduser()
    spec = next((s for s in specs_for(family) if path.name in (s.key, s.repo_name)), None)
    if not path.exists():
        raise ModelNotFoundError(f"Model path {path} ({family}) does not exist.", choice=choice, family=family,
                                 folder=path)
    if spec is not None:
        missing = _spec_missing(spec, path)
        if missing:
            raise _not_found(choice, family, spec, folder_key=None, missing=missing, target=path)
    return ResolvedModel(path, spec, "path", choice, family)


def resolve(choice: str, family: str) -> ResolvedModel:
    """Turn a model choice into complete files on disk (downloading them once if allowed)."""
    choice = (choice or "").strip()
    if not choice:
        raise ModelNotFoundError(f"No {family} model chosen: pick one of "
                                 f"{', '.join(available_choices(family)) or '(none installed)'}.", family=family)
    if choice.startswith("models--") and choice.count("--") == 2:  # a HF cache folder name
        choice = choice[len("models--"):].replace("--", "/")
    if choice.startswith("~") or Path(choice).is_absolute():
        return _resolve_path(choice, family)
    spec = _spec_for_choice(choice, family)
    if spec is not None:
        return _resolve_spec(spec, choice, family)
    return _resolve_unregistered(choice, family)


# ---- listing --------------------------------------------------------------------------------

def available_choices(family: str) -> list[str]:
    """Combo choices: the family's registered keys, then names found in its model folders."""
    specs = specs_for(family)
    choices = [spec.key for spec in specs]
    seen = set(choices)
    for spec in specs:  # an installed spec shows once, under its key
        if spec.repo_id:
            seen.update({spec.repo_id, spec.repo_name})
    from .registry import all_specs

    for spec in all_specs():  # another family's model in a shared folder ("diffusers") is not ours
        if spec.family != family:
            seen.update(n for n in (spec.key, spec.repo_name, spec.repo_id) if n)
    for key in family_folders(family):
        for directory in folder_dirs(key):
            for name in _names_in(directory):
                if name not in seen:
                    seen.add(name)
                    choices.append(name)
    return choices


def _names_in(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    names = []
    try:
        entries = sorted(directory.iterdir(), key=lambda p: p.name.lower())
    except OSError as exc:
        log.warning("cannot list model folder %s: %s", directory, exc)
        return []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if entry.name.startswith("models--") and entry.name.count("--") == 2:
                names.append(entry.name[len("models--"):].replace("--", "/"))
            else:
                names.append(entry.name)
        elif entry.name.lower().endswith(WEIGHT_FILE_SUFFIXES):
            names.append(entry.name)
    return names
