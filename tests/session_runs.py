"""A stand-in for ComfyUI running an agent plan, for the session tests and the commit benchmark.

``FakeRunner.run`` executes a validated plan on numpy images with tools that shape their outputs
like the real ones (a segment_by_text mask and labelled boxes, an inpaint that may drift outside
its mask the way a VAE round trip does, ...) and writes the run folder exactly as the record and
trace nodes do (``agent/trace.py``), so the store commits what a real run leaves on disk.
``plain_run`` writes a run folder from given outputs. ``Dialogue`` drives a session the way the
AgentPlanner node will (route, navigate or start a turn, plan with memory, run, commit);
``StoreWorld`` is a store with one session for the store tests.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from agentic_edit.agent.trace import record_step, write_plan, write_trace

COLOURS = {"red": (0.85, 0.1, 0.1), "blue": (0.1, 0.2, 0.9), "green": (0.1, 0.7, 0.2), "white": (1.0, 1.0, 1.0),
           "black": (0.0, 0.0, 0.0), "yellow": (0.95, 0.9, 0.1)}


def scene(width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    """A background with texture (so a wrong pixel anywhere is seen), float32 [H, W, 3] on the 1/255 grid."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / max(width - 1, 1), y / max(height - 1, 1), (x + y) / (width + height)], axis=-1) * 200
    pixels = np.clip(base + rng.integers(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    return pixels.astype(np.float32) / 255.0


def _rect_mask(shape, box) -> np.ndarray:
    x, y, w, h = box
    mask = np.zeros(shape[:2], np.float32)
    mask[y:y + h, x:x + w] = 1.0
    return mask


def _prompt_colour(text: str) -> np.ndarray:
    digest = hashlib.sha256(text.encode()).digest()
    return np.array(list(digest[:3]), np.float32) / 255.0


class FakeRunner:
    """``objects``: name -> (x, y, width, height) in the image; ``drift``: inpaint and recolor also
    nudge every pixel outside their mask by one level (a tool that does not keep the rest exact)."""

    def __init__(self, objects: dict, background: np.ndarray, drift: bool = False):
        self.objects, self.background, self.drift = dict(objects), background, drift

    def _find(self, query: str):
        words = query.lower().split()
        for name, box in self.objects.items():
            if name in words or name == query.lower():
                return name, box
        return None, None

    def _drifted(self, out: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.drift:
            nudged = np.clip(out + 1.0 / 255.0, 0, 1)
            out = np.where(mask[..., None] > 0, out, nudged)
        return out

    def tool(self, name: str, args: dict, inputs: dict) -> dict:
        image = inputs.get("image")
        if name in ("segment_by_text", "ground"):
            label, box = self._find(args["query"])
            boxes = [[{"x": box[0], "y": box[1], "width": box[2], "height": box[3], "label": label}]] if box else [[]]
            if name == "ground":
                return {"boxes": boxes}
            mask = _rect_mask(image.shape, box) if box else np.zeros(image.shape[:2], np.float32)
            return {"mask": mask, "boxes": boxes}
        if name == "place_region":
            h, w = image.shape[:2]
            return {"boxes": [[{"x": 0, "y": int(h * 0.8), "width": w, "height": h - int(h * 0.8),
                                "label": args.get("position", "bottom")}]]}
        if name in ("inpaint", "recolor", "remove_object", "reference_inpaint"):
            mask = inputs["mask"] > 0
            if name == "inpaint":
                fill = _prompt_colour(args.get("prompt", ""))
            elif name == "recolor":
                fill = np.array(COLOURS.get(args.get("color", "red"), (0.5, 0.5, 0.5)), np.float32)
            elif name == "reference_inpaint":
                fill = inputs["reference"].reshape(-1, 3).mean(axis=0)
            else:
                fill = self.background
            out = np.where(mask[..., None], fill, image).astype(np.float32)
            out = np.rint(out * 255) / 255.0
            return {"image": self._drifted(out, inputs["mask"]).astype(np.float32)}
        if name == "draw_text":
            out, changed = image.copy(), np.zeros(image.shape[:2], np.float32)
            for b in inputs["boxes"][0]:
                x, y, w, h = (int(b[k]) for k in ("x", "y", "width", "height"))
                out[y:y + h:2, x:x + w] = 0.0  # text-like stripes
                changed[y:y + h:2, x:x + w] = 1.0
            return {"image": out, "mask": changed}
        if name == "render_boxes":
            out = image.copy()
            for b in inputs["boxes"][0]:
                x, y, w, h = (int(b[k]) for k in ("x", "y", "width", "height"))
                out[y, x:x + w] = out[y + h - 1, x:x + w] = (1.0, 0.0, 0.0)
            return {"image": out}
        raise AssertionError(f"the fake runner has no tool {name}")

    def run(self, plan, image: np.ndarray, output_root: Path, run_id: str, bound: dict | None = None,
            references: list | None = None) -> Path:
        """Runs ``plan`` on ``image``; ``bound`` gives the values of ``session:<name>`` sources."""
        folder = Path(output_root) / "agentic_edit" / "runs" / run_id
        write_plan(folder, plan.instruction, plan.to_dict(), "offline")
        values = {"image": image}
        for k, ref in enumerate(references or [], 1):
            values["reference" if k == 1 else f"reference_{k}"] = ref
        for name, value in (bound or {}).items():
            values[f"session:{name}"] = value
        for step in plan.steps:
            inputs = {}
            for arg, ref in step.inputs.items():
                inputs[arg] = values[ref]
            outputs = self.tool(step.tool, step.args, inputs)
            for out, value in outputs.items():
                values[f"{step.id}.{out}"] = value
            record_step(folder, step.id, step.tool, step.args,
                        images=[outputs["image"]] if "image" in outputs else None,
                        masks=[outputs["mask"]] if "mask" in outputs else None,
                        boxes=outputs.get("boxes"))
        result = values[plan.output]
        record_step(folder, "result", "result", {}, images=[result])
        write_trace(folder, ["result_image.png"])
        return folder


def plain_run(folder: Path, instruction: str, steps: list[dict], images: dict, result: np.ndarray,
              masks: dict | None = None, boxes: dict | None = None, output: str | None = None) -> Path:
    """A run folder written directly: ``steps`` are plan steps, ``images``/``masks``/``boxes`` their
    outputs by step id (for runs the fake tools cannot make, and for the benchmark)."""
    plan = {"steps": steps, "instruction": instruction, "notes": ""}
    if output:
        plan["output"] = output
    write_plan(folder, instruction, plan, "test")
    for step in steps:
        sid = step["id"]
        record_step(folder, sid, step["tool"], step.get("args", {}),
                    images=[images[sid]] if sid in images else None,
                    masks=[(masks or {})[sid]] if sid in (masks or {}) else None,
                    boxes=(boxes or {}).get(sid))
    record_step(folder, "result", "result", {}, images=[result])
    write_trace(folder, ["result_image.png"])
    return folder


def trace_files(folder: Path) -> dict:
    return json.loads((Path(folder) / "trace.json").read_text())


class Dialogue:
    """One session driven the way the AgentPlanner node drives it: route the instruction, navigate or
    start a turn, plan with session memory, run, commit. ``say`` returns what happened."""

    def __init__(self, store, session_id: str, planner, runner: FakeRunner, output_root: Path, owner=None):
        self.store, self.session_id, self.planner, self.runner = store, session_id, planner, runner
        self.output_root, self.owner, self.count = Path(output_root), owner, 0

    def say(self, text: str, references: list | None = None) -> dict:
        from agentic_edit.agent.session import route_turn, routes_logic

        route = route_turn(self.store, self.session_id, text)
        if not route.instruction:
            moved = routes_logic.apply_route(self.store, self.session_id, route, owner=self.owner)
            return {"route": route, "moved": moved}
        self.count += 1
        run_id = f"run_{self.session_id}_{self.count}"
        ticket = self.store.start_turn(self.session_id, instruction=route.instruction, base=route.base.artifact,
                                       run_id=run_id, exposed=route.exposed, owner=self.owner,
                                       references=references or ())
        plan = self.planner.plan(route.instruction, None, references=len(references or ()), history=route.history)
        bound = {name: self.store.artifact_value(self.session_id, e.artifact, e.kind)
                 for name, e in route.bindings.items()}
        base = self.store.load_image(self.session_id, route.base.artifact)
        folder = self.runner.run(plan, base, self.output_root, run_id, bound, references=references)
        result = self.store.commit_turn(self.session_id, ticket.token, folder)
        return {"route": route, "plan": plan, "commit": result, "folder": folder}


# --- a session over a breakfast table, for the store tests -----------------------------------------
BREAKFAST = {"cup": (10, 10, 20, 15), "spoon": (50, 30, 20, 6), "saucer": (4, 44, 30, 12), "plate": (60, 4, 30, 14)}


def breakfast():
    image = scene()
    for (x, y, w, h), shade in zip(BREAKFAST.values(), (0.9, 0.35, 0.6, 0.75)):
        image[y:y + h, x:x + w] = shade
    return image


def u8(image) -> np.ndarray:
    return np.rint(np.asarray(image) * 255).astype(np.uint8)


class StoreWorld:
    """A store with one session of ``breakfast()``; ``edit`` runs a turn planned by the offline
    planner (no memory routing) through ``FakeRunner`` and commits it."""

    def __init__(self, tmp_path, drift=False, store=None, session_id=None, **store_options):
        from agentic_edit.agent.planners.offline import OfflinePlanner
        from agentic_edit.agent.session import SessionStore
        from tests.agent_tools import sample_catalogue

        self.tmp = Path(tmp_path)
        self.planner = OfflinePlanner(sample_catalogue(future=True))
        self.store = store or SessionStore(self.tmp / "sessions", **store_options)
        self.original = breakfast()
        self.runner = FakeRunner(BREAKFAST, scene(), drift=drift)
        self.sid = session_id or self.store.create_session(self.original, title="breakfast").id

    def edit(self, text, base=None, owner=None):
        ticket = self.store.start_turn(self.sid, instruction=text, base=base, owner=owner)
        folder = self.run_folder(text, ticket.base.artifact)
        return self.store.commit_turn(self.sid, ticket.token, folder)

    def run_folder(self, text, base_artifact, run_id=None):
        run_id = run_id or f"run_{time.monotonic_ns()}"
        plan = self.planner.plan(text)
        return self.runner.run(plan, self.store.load_image(self.sid, base_artifact), self.tmp / "output", run_id)

    def head_pixels(self) -> np.ndarray:
        return u8(self.store.load_image(self.sid, self.store.session(self.sid).head))

    def files(self) -> list:
        return sorted(p.relative_to(self.store.root) for p in (self.store.root / self.sid).rglob("*") if p.is_file())
