"""An agent edit as a ComfyUI job, end to end: upload the image, queue LoadImage -> AgentPlanner ->
PreviewImage, follow it, then bring the run folder home (result, every step's intermediates, plan,
trace and the replayable workflows) through ``/view``.

The run folder on the server is ``output/agentic_edit/runs/<run_id>/`` (agent/trace.py); the trace
lists every file in it, so the download needs nothing but the trace. The local copy is written under
a temporary name and renamed when complete: a folder that exists is a whole run.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .client import PLANNER_NODE, ComfyClient, EventCallback, FileRef, JobResult
from .client_errors import BadInput, ComfyError, SessionRoutesMissing
from .client_files import check_image_file
from .trace import RUNS_SUBFOLDER

# Files of a run folder besides the step records (written by the AgentPlanner node; older packs lack some).
RUN_DOCUMENTS = ("plan.json", "trace.json", "workflow.json", "workflow_api.json")
SESSION_INPUTS = ("session", "session_id")  # what the AgentPlanner's session input may be called


def fill_inputs(info: dict, given: dict) -> dict:
    """A node's API-format inputs: ``given``, plus ComfyUI's default for every other required widget
    (so a server whose node gained a widget still takes the prompt)."""
    inputs = {k: v for k, v in given.items() if v is not None}
    for name, spec in (info.get("input", {}).get("required") or {}).items():
        if name in inputs:
            continue
        kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
        if isinstance(kind, list):  # V1 combo: the list is the type
            inputs[name] = options.get("default", kind[0] if kind else "")
        elif kind == "COMBO":
            choices = options.get("options") or [""]
            inputs[name] = options.get("default", choices[0])
        elif kind in ("INT", "FLOAT", "BOOLEAN", "STRING"):
            inputs[name] = options.get("default", {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}[kind])
    return inputs


def node_inputs(info: dict) -> set[str]:
    return set(info.get("input", {}).get("required") or {}) | set(info.get("input", {}).get("optional") or {})


def edit_prompt(planner_info: dict, image_name: str, instruction: str, *, planner: str = "offline",
                reference_name: str | None = None, session: str | None = None, **options) -> dict:
    """The API-format graph of one agent turn. ``options`` are other AgentPlanner widgets
    (base_url, model, temperature, ...); None leaves the node's default."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise BadInput("the instruction is empty; say what to change, e.g. \"write 'SALE' at the top\"")
    graph = {"load_image": {"class_type": "LoadImage", "inputs": {"image": image_name}}}
    given = {"image": ["load_image", 0], "instruction": instruction, "planner": planner, **options}
    if reference_name is not None:
        graph["load_reference"] = {"class_type": "LoadImage", "inputs": {"image": reference_name}}
        given["reference"] = ["load_reference", 0]
    if session is not None:
        names = [n for n in SESSION_INPUTS if n in node_inputs(planner_info)]
        if not names:
            raise SessionRoutesMissing(
                "this server's pack has no session memory yet (its AgentPlanner takes no session input); "
                "run without --session, or update the pack on that ComfyUI")
        given[names[0]] = session
    graph["agent"] = {"class_type": PLANNER_NODE, "inputs": fill_inputs(planner_info, given)}
    # ComfyUI runs only graphs with an output node; the result itself is kept in the run folder.
    graph["preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["agent", 0]}}
    return graph


def step_of(node_id: str | None) -> str | None:
    """The plan step a node id belongs to: expanded nodes are ``<agent>.<prefix>.<step>``; records
    and the trace writer are bookkeeping, not steps."""
    if not node_id or "." not in node_id:
        return None
    local = node_id.rsplit(".", 1)[1]
    return None if local == "trace" or local.endswith("_record") else local


def node_label(node_id: str | None) -> str:
    """A node id as a person reads it: the plan step, "s1 recorded", "trace written", or the id."""
    step = step_of(node_id)
    if step or not node_id or "." not in node_id:
        return step or node_id or ""
    local = node_id.rsplit(".", 1)[1]
    return "trace written" if local == "trace" else f"{local[:-len('_record')]} recorded"


def run_folder(result: JobResult) -> FileRef | None:
    """The run folder (as a reference to its trace.json) among a job's outputs."""
    for ref in result.files():
        if ref.type == "output" and ref.subfolder.startswith(RUNS_SUBFOLDER + "/"):
            return ref.sibling("trace.json")
    return None


def _signature(prompt: dict, node_id: str, seen: tuple = ()) -> tuple:
    """What ComfyUI's cache keys a node on: its class and inputs, links replaced by the upstream
    node's own signature."""
    node = prompt.get(node_id) or {}
    parts = []
    for name, value in sorted(node.get("inputs", {}).items()):
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] not in seen:
            value = (_signature(prompt, value[0], seen + (node_id,)), value[1])
        parts.append((name, repr(value)))
    return node.get("class_type"), tuple(parts)


def cached_run(client: ComfyClient, prompt: dict, node_id: str = "agent", look_back: int = 500) -> FileRef | None:
    """When ComfyUI served the agent node from its cache, nothing ran and no run folder was
    reported; the run that filled the cache is the latest job in ``/history`` with the same node."""
    wanted = _signature(prompt, node_id)
    history = client.get_json(f"/history?max_items={look_back}")
    for prompt_id, entry in reversed(list(history.items())):
        earlier = entry.get("prompt", [None, None, {}])[2]
        for other_id, node in earlier.items():
            if node.get("class_type") == PLANNER_NODE and _signature(earlier, other_id) == wanted:
                found = run_folder(JobResult(prompt_id, client.url, entry))
                if found is not None:
                    return found
    return None


@dataclass
class EditResult:
    prompt_id: str
    server: str
    run_id: str
    server_folder: str          # "output/agentic_edit/runs/<run_id>" on the server
    folder: Path                # the local copy of the run folder
    result: Path                # the edited image, inside ``folder``
    trace: dict
    files: list[Path] = field(default_factory=list)

    def steps(self) -> list[dict]:
        return [s for s in self.trace.get("steps", [])]


def run_edit(client: ComfyClient, image, instruction: str, out_dir: str | os.PathLike, *,
             planner: str = "offline", reference=None, session: str | None = None, folder_name: str | None = None,
             on_event: EventCallback | None = None, timeout: float | None = None,
             cancel: threading.Event | None = None, **options) -> EditResult:
    """Run one agent turn on ``client``'s server and copy its run folder to ``out_dir/<run_id>``
    (or ``out_dir/<folder_name>``). Inputs are checked before anything is sent."""
    image_path = check_image_file(image)
    reference_path = check_image_file(reference, "reference image") if reference is not None else None
    info = client.planner_info()
    image_name = client.upload_image(image_path)
    reference_name = client.upload_image(reference_path) if reference_path is not None else None
    prompt = edit_prompt(info, image_name, instruction, planner=planner, reference_name=reference_name,
                         session=session, **options)
    result = client.run(prompt, on_event=on_event, timeout=timeout, cancel=cancel)
    return fetch_run(client, result, out_dir, folder_name, prompt)


def fetch_run(client: ComfyClient, result: JobResult, out_dir, folder_name: str | None = None,
              prompt: dict | None = None) -> EditResult:
    trace_ref = run_folder(result) or (cached_run(client, prompt) if prompt else None)
    if trace_ref is None:
        raise ComfyError(f"job {result.prompt_id} finished but reported no agentic_edit run folder (ComfyUI "
                         "served it from a cache whose run is no longer in /history); change the instruction "
                         "slightly or restart that ComfyUI to run it again")
    trace = client.view_json(trace_ref)
    run_id = trace_ref.subfolder.rsplit("/", 1)[1]
    names = list(RUN_DOCUMENTS)
    for step in trace.get("steps", []):
        if step.get("status") == "done":
            names.append(f"{step['step']}.json")
            names.extend(n for files in step.get("files", {}).values() for n in files)
    names.extend(trace.get("result", []))
    if not trace.get("result"):
        raise ComfyError(f"run {run_id}: the trace lists no result image")
    dest = Path(out_dir) / (folder_name or run_id)
    files = download_folder(client, trace_ref, dict.fromkeys(names), dest)
    return EditResult(result.prompt_id, result.server, run_id, f"output/{trace_ref.subfolder}", dest,
                      dest / trace["result"][0], trace, files)


def download_folder(client: ComfyClient, ref: FileRef, names, dest: Path) -> list[Path]:
    """Download ``names`` from ``ref``'s folder into ``dest``, all or nothing."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:6]}.partial")
    try:
        for name in names:
            try:
                client.download(ref.sibling(name), partial / name)
            except ComfyError:
                if name in RUN_DOCUMENTS and name != "trace.json":
                    continue  # written by newer packs only
                raise
        if dest.exists():  # a rerun of a cached job: the same run, replaced whole
            old = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:6]}.old")
            os.replace(dest, old)
            os.replace(partial, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, dest)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return sorted(dest / name for name in names if (dest / name).exists())
