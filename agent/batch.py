"""Many edits over one or more ComfyUI servers, resumable.

Items are images x one instruction (files, folders) or the rows of a CSV ``image,instruction``. One
worker per server takes the next item when its server's queue (``GET /queue``: everyone's jobs,
running and waiting) is no longer than the shortest among the live servers, so a server busy with
other people's work gets less. A server that stops answering is dropped; the job it had in flight
goes back to the queue and finishes on another. A JSON manifest records every item's state (done,
failed, pending) as it changes, written atomically, so a rerun with the same manifest skips what is
done and retries the rest.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .client import ComfyClient
from .client_errors import BadInput, ComfyError, ServerUnreachable
from .client_files import IMAGE_SUFFIXES
from .jobs import run_edit
from .trace import write_json_atomic

MANIFEST_VERSION = 1
MAX_ATTEMPTS = 3  # times an item may lose its server before it counts as failed


@dataclass(frozen=True)
class BatchItem:
    image: str
    instruction: str

    @property
    def key(self) -> str:
        digest = hashlib.sha1(f"{self.image}\0{self.instruction}".encode()).hexdigest()[:8]
        return f"{Path(self.image).stem[:40]}-{digest}"


def items_from_paths(paths, instruction: str) -> list[BatchItem]:
    """Files as given, folders expanded to their image files (sorted), each with ``instruction``."""
    items = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if path.is_dir():
            items.extend(BatchItem(str(p), instruction) for p in sorted(path.iterdir())
                         if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            items.append(BatchItem(str(path), instruction))  # a missing file fails as its own item
    return items


def items_from_csv(path) -> list[BatchItem]:
    """Rows ``image,instruction`` (a header row naming them is optional); image paths relative to
    the CSV's folder."""
    path = Path(path).expanduser().resolve()
    items = []
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if number == 1 and [c.strip().lower() for c in row[:2]] == ["image", "instruction"]:
                continue
            if len(row) < 2 or not row[1].strip():
                raise ValueError(f"{path}, row {number}: expected 'image,instruction', got {row!r}")
            items.append(BatchItem(str((path.parent / row[0].strip()).resolve()), row[1].strip()))
    return items


class Manifest:
    """The batch's record on disk; every change is saved at once (temp file + rename)."""

    def __init__(self, path):
        self.path = Path(path)
        self.lock = threading.RLock()
        self.data = {"version": MANIFEST_VERSION, "items": {}}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
                self.data["items"]
            except (ValueError, KeyError, TypeError):
                raise BadInput(f"{self.path} is not a batch manifest (JSON with 'items'); give another --manifest "
                               "or move it away to start over") from None
            for entry in self.data.get("items", {}).values():
                if entry.get("status") == "running":  # a batch that died mid-job
                    entry["status"] = "pending"

    def entry(self, item: BatchItem) -> dict:
        with self.lock:
            return self.data["items"].setdefault(item.key, {"image": item.image, "instruction": item.instruction,
                                                            "status": "pending", "attempts": 0})

    def update(self, item: BatchItem, **fields) -> None:
        with self.lock:
            self.entry(item).update(fields)
            write_json_atomic(self.path, self.data)


@dataclass
class BatchEvent:
    kind: str              # "skipped", "started", "done", "failed", "requeued", "server_down"
    server: str
    item: BatchItem | None = None
    message: str = ""


@dataclass
class BatchReport:
    manifest: Path
    done: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    pending: list[dict] = field(default_factory=list)
    skipped: int = 0

    @property
    def complete(self) -> bool:
        return not self.failed and not self.pending


class _Scheduler:
    def __init__(self, items, servers, out_dir, manifest, on_event, on_job_event, edit_options, client_options):
        self.todo = deque(items)
        self.in_flight: dict[str, str] = {}
        self.loads: dict[str, int] = {}
        self.alive = set(servers)
        self.cond = threading.Condition()
        self.out_dir, self.manifest, self.on_event = Path(out_dir), manifest, on_event
        self.on_job_event = on_job_event
        self.edit_options, self.client_options = edit_options, client_options

    def emit(self, kind, server, item=None, message=""):
        if self.on_event is not None:
            self.on_event(BatchEvent(kind, server, item, message))

    def server_down(self, server: str, reason: str) -> None:
        with self.cond:
            self.alive.discard(server)
            self.loads.pop(server, None)
            self.cond.notify_all()
        self.emit("server_down", server, message=reason)

    def next_item(self, server: str, client: ComfyClient) -> BatchItem | None:
        """The next item for ``server``, when its queue is among the shortest; None when all is done."""
        while True:
            with self.cond:
                if not self.todo:
                    if not self.in_flight or server not in self.alive:
                        return None
                    self.cond.wait(0.5)  # a job in flight elsewhere may come back
                    continue
            length = client.queue_length()
            with self.cond:
                self.loads[server] = length
                if not self.todo:
                    continue
                if length <= min(self.loads.get(s, 0) for s in self.alive):
                    item = self.todo.popleft()
                    self.in_flight[item.key] = server
                    return item
                self.cond.wait(0.5)  # a less busy server should take it

    def finish(self, item: BatchItem, requeue: bool = False) -> None:
        with self.cond:
            self.in_flight.pop(item.key, None)
            if requeue:
                self.todo.appendleft(item)
            self.cond.notify_all()

    def work(self, server: str) -> None:
        client = ComfyClient(server, **self.client_options)
        try:
            client.planner_info()
        except ComfyError as exc:
            self.server_down(server, str(exc))
            return
        while True:
            try:
                item = self.next_item(server, client)
            except ServerUnreachable as exc:
                self.server_down(server, str(exc))
                return
            if item is None:
                return
            if not self.run_one(server, client, item):
                return

    def run_one(self, server: str, client: ComfyClient, item: BatchItem) -> bool:
        """Run ``item``; False when its server is gone (the item went back to the queue)."""
        attempts = self.manifest.entry(item).get("attempts", 0) + 1
        self.manifest.update(item, status="running", server=server, attempts=attempts, error=None)
        self.emit("started", server, item)
        started = time.monotonic()
        follow = (lambda event: self.on_job_event(server, item, event)) if self.on_job_event else None
        try:
            result = run_edit(client, item.image, item.instruction, self.out_dir, folder_name=item.key,
                              on_event=follow, **self.edit_options)
        except ServerUnreachable as exc:
            if attempts >= MAX_ATTEMPTS:
                self.manifest.update(item, status="failed", error=f"lost its server {attempts} times: {exc}")
                self.finish(item)
                self.emit("failed", server, item, str(exc))
            else:
                self.manifest.update(item, status="pending", error=f"server {server} stopped: {exc}")
                self.finish(item, requeue=True)
                self.emit("requeued", server, item, str(exc))
            self.server_down(server, str(exc))
            return False
        except (ComfyError, ValueError, OSError) as exc:
            self.manifest.update(item, status="failed", error=str(exc), seconds=round(time.monotonic() - started, 3))
            self.finish(item)
            self.emit("failed", server, item, str(exc))
            return True
        self.manifest.update(item, status="done", error=None, run_id=result.run_id, prompt_id=result.prompt_id,
                             folder=os.path.relpath(result.folder, self.out_dir),
                             result=os.path.relpath(result.result, self.out_dir),
                             seconds=round(time.monotonic() - started, 3), finished_at=time.time())
        self.finish(item)
        self.emit("done", server, item)
        return True


def run_batch(items: list[BatchItem], servers: list[str], out_dir, *, manifest_path=None,
              on_event: Callable[[BatchEvent], None] | None = None, on_job_event=None,
              client_options: dict | None = None, **edit_options) -> BatchReport:
    """Run every item not yet done in the manifest (default ``out_dir/manifest.json``) over
    ``servers``. ``on_event`` hears item and server events, ``on_job_event(server, item, JobEvent)``
    each job's progress; ``client_options`` go to ``ComfyClient`` (timeout, reconnect_window) and
    ``edit_options`` to ``jobs.run_edit`` (planner, timeout, ...)."""
    if not servers:
        raise ValueError("batch: give at least one --server URL")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(manifest_path or out_dir / "manifest.json")
    unique = list(dict.fromkeys(items))
    todo = []
    for item in unique:
        if manifest.entry(item).get("status") == "done" and (out_dir / manifest.entry(item).get("result", "")).is_file():
            if on_event is not None:
                on_event(BatchEvent("skipped", manifest.entry(item).get("server", ""), item))
        else:
            manifest.update(item, status="pending")
            todo.append(item)
    scheduler = _Scheduler(todo, [ComfyClient(s).url for s in servers], out_dir, manifest, on_event, on_job_event,
                           edit_options, client_options or {})
    threads = [threading.Thread(target=scheduler.work, args=(s,), name=f"batch {s}", daemon=True)
               for s in sorted(scheduler.alive)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report = BatchReport(manifest.path, skipped=len(unique) - len(todo))
    for item in unique:
        entry = {"key": item.key, **manifest.entry(item)}
        {"done": report.done, "failed": report.failed}.get(entry["status"], report.pending).append(entry)
    return report
