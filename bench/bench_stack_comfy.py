"""The bench_stack chains inside a real ComfyUI: its model management decides what to unload.

Starts ComfyUI (``--comfy PATH``) with this pack as a custom node and the full-size random weights
of bench/stack_models.py as its model folders, then queues, as API prompts built from the server's
own ``/object_info`` (defaults for every input not set here):

* edit: LoadImage -> Ground (Qwen2.5-VL-7B, 64 tokens; its boxes rendered and saved, so the node
  runs) ; MakeBoxes (the fixed box) -> Segment (SAM-2.1-large) -> CombineMasks(max with the box
  mask, so random weights never leave it empty) -> Inpaint (SDXL, 1024², 30 steps, full image) -> SaveImage;
* remove_text: LoadImage -> BoxesToMask -> RemoveObject (method inpaint, 30 steps) -> DrawText -> SaveImage.

Each run uploads a slightly different image, so ComfyUI's cache never skips a node. Times are the
server's own (execution_start -> execution_success in /history); the GPU memory in use is polled
with nvidia-smi (whole process, CUDA context included). ``--reserve-vram GB`` is passed to ComfyUI
(total - reserve acts as a smaller card for its model management).

On the GPU machine ComfyUI and the packages it needs are carried in two calls (bench/SWAPPING.md);
then, with them on PYTHONPATH:

    python3 bench/bench_stack_comfy.py --comfy bench/out/comfy_site/ComfyUI [--reserve-vram 56]
    ~/comfy/venv/bin/python bench/bench_stack_comfy.py --tiny      # CPU, tiny weights: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.pack import import_pack  # noqa: E402

import_pack()
from bench import stack_models as weights  # noqa: E402
from bench.bench_inpaint import scene  # noqa: E402
from bench.stack_chains import EDIT_PROMPT, QUERY, REMOVE_GROW, TEXT  # noqa: E402
from bench.timing import write_report  # noqa: E402
from tests.comfy_harness import ComfyServer, find_comfyui  # noqa: E402


class GpuComfyServer(ComfyServer):
    """The test harness's server, started on the GPU (no --cpu) with an empty front-end folder (the
    HTTP API needs none; the frontend package is 85 MB)."""

    def __init__(self, *args, cpu: bool, reserve_vram: float | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cpu, self.reserve_vram = cpu, reserve_vram

    def start(self, timeout: float = 300.0):
        base = self.workdir / "base"
        for sub in ("custom_nodes", "user", "input", "output"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        front = self.workdir / "frontend"
        front.mkdir(parents=True, exist_ok=True)
        (front / "index.html").write_text("<!doctype html><title>API only</title>")
        paths_yaml = self._write_paths_yaml()
        cmd = [sys.executable, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
               "--disable-api-nodes", "--base-directory", str(base), "--extra-model-paths-config", str(paths_yaml),
               "--front-end-root", str(front), "--database-url", "sqlite:///:memory:"]
        if self.cpu:
            cmd.append("--cpu")
        if self.reserve_vram:
            cmd += ["--reserve-vram", str(self.reserve_vram)]
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.process.returncode}; log:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s; log:\n{self.log_tail()}")


# ---- prompts from /object_info -------------------------------------------------------------------------

class PromptBuilder:
    def __init__(self, info: dict):
        self.info, self.nodes = info, {}

    def add(self, class_type: str, **inputs) -> str:
        if class_type not in self.info:
            raise RuntimeError(f"ComfyUI has no node {class_type} (did the pack load? see the server log)")
        spec = self.info[class_type]["input"]
        full = {}
        for name, entry in {**spec.get("required", {}), **spec.get("optional", {})}.items():
            if name in inputs:
                continue
            kind, options = entry[0], (entry[1] if len(entry) > 1 else {}) or {}
            if "default" in options:
                full[name] = options["default"]
            elif isinstance(kind, list) and kind:
                full[name] = kind[0]
        full.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in inputs.items()})
        key = str(len(self.nodes) + 1)
        self.nodes[key] = {"class_type": class_type, "inputs": full}
        return key

    def choice(self, class_type: str, name: str, wanted: str, fallback_not: str | None = None) -> str:
        spec = self.info[class_type]["input"]
        entry = {**spec.get("required", {}), **spec.get("optional", {})}[name]
        options = entry[0] if isinstance(entry[0], list) else entry[1].get("options", [])
        if wanted in options:
            return wanted
        return next(o for o in options if o != fallback_not)


def box_json(box) -> str:
    return json.dumps([{"x": box[0], "y": box[1], "width": box[2] - box[0], "height": box[3] - box[1], "label": "target"}])


def edit_prompt(info: dict, image_name: str, box, settings: dict) -> dict:
    p = PromptBuilder(info)
    image = p.add("LoadImage", image=image_name)
    ground = p.add("AgenticEditGround", image=(image, 0), query=QUERY, grounding_model=weights.QWEN_KEY, mode="qwen",
                   max_pixels=settings["max_pixels"], max_new_tokens=settings["tokens"],
                   if_nothing_found=p.choice("AgenticEditGround", "if_nothing_found", "empty", fallback_not="error"))
    shown = p.add("AgenticEditRenderBoxes", image=(image, 0), boxes=(ground, 0))
    p.add("SaveImage", images=(shown, 0), filename_prefix="stack/ground")
    boxes = p.add("AgenticEditMakeBoxes", boxes_json=box_json(box))
    segment = p.add("AgenticEditSegment", image=(image, 0), boxes=(boxes, 0), sam_model=weights.SAM_KEY)
    fallback = p.add("AgenticEditBoxesToMask", image=(image, 0), boxes=(boxes, 0))
    mask = p.add("AgenticEditCombineMasks", mask_a=(segment, 0), mask_b=(fallback, 0),
                 operation=p.choice("AgenticEditCombineMasks", "operation", "union"))
    inpaint = p.add("AgenticEditInpaint", image=(image, 0), mask=(mask, 0), prompt=EDIT_PROMPT,
                    model=weights.SDXL_KEY, steps=settings["steps"], strength=1.0,
                    mode=p.choice("AgenticEditInpaint", "mode", "full"))
    p.add("SaveImage", images=(inpaint, 0), filename_prefix="stack/edit")
    return p.nodes


def remove_text_prompt(info: dict, image_name: str, box, settings: dict) -> dict:
    p = PromptBuilder(info)
    image = p.add("LoadImage", image=image_name)
    boxes = p.add("AgenticEditMakeBoxes", boxes_json=box_json(box))
    mask = p.add("AgenticEditBoxesToMask", image=(image, 0), boxes=(boxes, 0))
    removed = p.add("AgenticEditRemoveObject", image=(image, 0), mask=(mask, 0), model=weights.SDXL_KEY,
                    grow=REMOVE_GROW, steps=settings["steps"], mode=p.choice("AgenticEditRemoveObject", "mode", "full"),
                    method="inpaint")
    text = p.add("AgenticEditDrawText", image=(removed, 0), boxes=(boxes, 0), text=TEXT)
    p.add("SaveImage", images=(text, 0), filename_prefix="stack/remove_text")
    return p.nodes


PROMPTS = {"edit": edit_prompt, "remove_text": remove_text_prompt}


# ---- running -------------------------------------------------------------------------------------------

class GpuMemoryPoller:
    """Peak GPU memory in use (MiB, nvidia-smi: every process, contexts included), polled every 50 ms."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self.available = shutil.which("nvidia-smi") is not None
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i",
                                      "0"], capture_output=True, text=True, timeout=5).stdout
                self.peak = max(self.peak, int(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                pass
            self._stop.wait(0.05)

    def __enter__(self):
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self.available:
            self._thread.join(5)


def run_prompt(server: ComfyServer, prompt: dict, timeout: float) -> dict:
    began = time.perf_counter()
    prompt_id = server.queue(prompt)
    deadline = time.monotonic() + timeout
    while True:
        history = server.get_json(f"/history/{prompt_id}")
        entry = history.get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"prompt did not finish in {timeout:.0f} s; log:\n{server.log_tail()}")
        time.sleep(0.05)
    wall = time.perf_counter() - began
    messages = {kind: data for kind, data in entry["status"].get("messages", [])}
    if entry["status"].get("status_str") != "success":
        error = messages.get("execution_error", {})
        raise RuntimeError(f"{error.get('node_type')}: {error.get('exception_message')}")
    start, end = messages.get("execution_start", {}), messages.get("execution_success", {})
    server_s = (end["timestamp"] - start["timestamp"]) / 1000 if "timestamp" in start and "timestamp" in end else None
    return {"wall_s": wall, "server_s": server_s, "cached_nodes": len(messages.get("execution_cached", {}).get("nodes", []))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfy", default=None, help="ComfyUI checkout (default: the tests' one)")
    parser.add_argument("--tiny", action="store_true", help="tiny weights on the CPU (checks the script)")
    parser.add_argument("--runs", type=int, default=3, help="runs per chain after the first")
    parser.add_argument("--reserve-vram", type=float, default=None, help="GB ComfyUI keeps free (simulates a smaller card)")
    parser.add_argument("--models-root", default=None)
    parser.add_argument("--workdir", default="/tmp/agentic-stack-comfy")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available() and not args.tiny
    root = Path(args.models_root or ("/tmp/agentic-stack-models-tiny" if args.tiny else "/tmp/agentic-stack-models"))
    comfy = Path(args.comfy) if args.comfy else find_comfyui()
    if comfy is None or not (comfy / "main.py").is_file():
        parser.error(f"no ComfyUI at {comfy}: pass --comfy PATH")
    began = time.perf_counter()
    models = weights.ensure_models(root, args.tiny, torch.device("cuda" if cuda else "cpu"))
    torch.cuda.empty_cache() if cuda else None
    settings = {"tokens": 8 if args.tiny else 64, "steps": 3 if args.tiny else 30,
                "max_pixels": 140 * 140 if args.tiny else 1036 * 1036}
    side = 128 if args.tiny else 1024
    print(f"models ready in {time.perf_counter() - began:.0f} s", flush=True)
    report = {"comfy": str(comfy), "models": models, "settings": settings, "reserve_vram": args.reserve_vram,
              "chains": {}}
    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    server = GpuComfyServer(workdir, models_dir=root, comfy_root=comfy, cpu=not cuda, reserve_vram=args.reserve_vram)
    started = time.perf_counter()
    server.start()
    report["start_s"] = time.perf_counter() - started
    try:
        info = server.object_info()
        base, mask = scene(side, 0.08)
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max() + 1), int(ys.max() + 1)]
        rng = np.random.default_rng(0)
        for chain, build in PROMPTS.items():
            runs = []
            for index in range(args.runs + 1):
                image = np.clip(base + rng.normal(0, 1 / 255, base.shape), 0, 1)   # new pixels: no cached node
                name = server.upload_image(image, f"stack_{chain}_{index}.png")
                with GpuMemoryPoller() as memory:
                    result = run_prompt(server, build(info, name, box, settings), timeout=600)
                result["peak_gpu_mib"] = memory.peak or None
                runs.append(result)
                print(f"{chain} run {index}: {json.dumps(result)}", flush=True)
            warm = runs[1:] or runs
            report["chains"][chain] = {"first": runs[0], "warm_median_server_s": statistics.median(
                r["server_s"] or r["wall_s"] for r in warm), "runs": runs}
        log = server.log_tail(200000)
        report["comfy_log_counts"] = {key: log.count(key) for key in ("Requested to load", "loaded completely",
                                                                      "Unloading", "loaded partially")}
    finally:
        server.stop()
    print(json.dumps({k: v for k, v in report.items() if k != "models"}, indent=1, default=str))
    target = args.json or (os.path.join(os.environ["OUT"], "bench_stack_comfy.json") if os.environ.get("OUT") else None)
    if target:
        write_report(target, report)
        shutil.copy(server.log_path, Path(target).with_suffix(".log"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
