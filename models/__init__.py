"""The model store: the only place that knows where weights live and how they stay in memory.

Public API (engines use only this):

    from ..models import ModelSpec, register_spec, resolve, acquire, free, available_choices
    from ..models import ModelNotFoundError, memory_profile

    register_spec(ModelSpec(...))            # each engine registers the models it knows (import time)
    available_choices(family) -> list[str]   # COMBO choices: known specs + whatever is on disk
    resolve(choice, family) -> ResolvedModel # files on disk (downloading once from the hub if allowed)
    handle = acquire(choice, family, build, dtype=None, device=None)
        # build(resolved: ResolvedModel, device, dtype) -> object (an nn.Module or a pipeline);
        # loads once, cached by (resolved path, device, dtype); returns a LoadedModel.
    with handle.use() as model: ...          # resident on the compute device for the block;
                                             # under the `low` profile offloaded to CPU after it
    free(family=None)                        # drop cached models (all, or one family)
    load_device(resolved, device, dtype)     # in a build: load straight to the device, or to the CPU
    shared_component(path, dtype, load)      # one module for two engines loading the same files
    store_stats.snapshot() / build_counts()  # builds, moves, offloads, frees and their time
    set_memory_profile("low")                # or AGENTIC_EDIT_MEMORY_PROFILE=low|high|auto

See ``registry.py`` (specs), ``paths.py`` (model folders), ``resolve.py`` (name -> files),
``devices.py`` (device, dtype, memory profiles), ``cache.py`` (load once, use, free) and
``comfy_memory.py`` (cooperation with ComfyUI's model management, only when running inside it).
"""

from .registry import ModelSpec, register_spec, get_spec, specs_for, register_family_folders
from .resolve import ModelNotFoundError, ResolvedModel, available_choices, resolve
from .devices import MemoryProfile, memory_profile, pick_device, pick_dtype, set_memory_profile
from .cache import LoadedModel, acquire, free, load_device, loaded_models
from .shared import shared_component
from . import stats as store_stats

__all__ = [
    "ModelSpec", "register_spec", "get_spec", "specs_for", "register_family_folders",
    "ModelNotFoundError", "ResolvedModel", "available_choices", "resolve",
    "MemoryProfile", "memory_profile", "pick_device", "pick_dtype", "set_memory_profile",
    "LoadedModel", "acquire", "free", "load_device", "loaded_models", "shared_component", "store_stats",
]
