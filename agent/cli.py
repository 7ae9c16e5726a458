"""The ``agentic-edit`` command: drive the pack in a running ComfyUI (or one started for the job).

    agentic-edit edit photo.png "write 'SALE' at the top" [--session S] [--planner offline|openai|local]
                 [--server URL] [--out DIR]
    agentic-edit sessions | history --session S | undo | redo --session S | rollback | branch --session S --turn N
    agentic-edit export-workflow RUN [--format ui|api] [--out FILE]
    agentic-edit batch IMAGES_OR_FOLDERS... --instruction TEXT | --csv FILE  [--server URL ...] [--out DIR]
    agentic-edit mcp [--transport stdio|http]

Progress goes to stderr, results to stdout (``--json`` for a machine-readable summary). Exit codes:
0 done, 1 the job failed (rejected, error in a node, interrupted, timeout, batch items left),
2 bad input (usage, missing or non-image file, unknown session), 3 server trouble (unreachable,
without this pack, without session routes), 130 cancelled with Ctrl-C (the job is cancelled too).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .client import DEFAULT_URL, ComfyClient
from .client_errors import BadInput, ComfyError
from .client_files import FileRef
from .progress_view import StepProgress
from .trace import RUNS_SUBFOLDER

DEFAULT_OUT = os.environ.get("AGENTIC_EDIT_OUT", "agentic_edit_out")


def _notify(text: str) -> None:
    print(f"agentic-edit: {text}", file=sys.stderr, flush=True)


class _Connection:
    """``with _Connection(args) as client``: a client for --server, or for a ComfyUI started for the
    command when none answers (stopped on exit)."""

    def __init__(self, args):
        self.args, self.local = args, None

    def __enter__(self) -> ComfyClient:
        from .local_server import connect

        client, self.local = connect(self.args.server, start_local=not self.args.no_local, notify=_notify,
                                     timeout=30.0)
        return client

    def __exit__(self, *exc) -> None:
        if self.local is not None:
            _notify("stopping the ComfyUI started for this job")
            self.local.stop()


# -- commands ----------------------------------------------------------------------------------
def cmd_edit(args) -> int:
    from .jobs import run_edit

    options = {k: v for k, v in (("base_url", args.base_url), ("model", args.model)) if v}
    progress = StepProgress()
    with _Connection(args) as client:
        try:
            result = run_edit(client, args.image, args.instruction, args.out, planner=args.planner,
                              reference=args.reference, session=args.session, on_event=progress,
                              timeout=args.timeout, **options)
        except KeyboardInterrupt:
            if progress.prompt_id:
                client.interrupt(progress.prompt_id)
                _notify(f"cancelled job {progress.prompt_id} on {client.url}")
            return 130
    steps = [{"step": s["step"], "tool": s.get("tool"), "seconds": s.get("seconds"), "status": s.get("status")}
             for s in result.steps()]
    if args.json:
        print(json.dumps({"result": str(result.result), "folder": str(result.folder),
                          "trace": str(result.folder / "trace.json"), "run_id": result.run_id,
                          "server_folder": result.server_folder, "server": result.server,
                          "prompt_id": result.prompt_id, "steps": steps,
                          "files": [str(p) for p in result.files]}, indent=1))
        return 0
    intermediates = [p.name for p in result.files if p.name not in (result.result.name, "trace.json")]
    print(f"result:        {result.result}")
    print(f"intermediates: {result.folder}/ ({', '.join(intermediates)})")
    print(f"trace:         {result.folder / 'trace.json'}")
    print(f"on the server: {result.server_folder}/ at {result.server} (run {result.run_id})")
    for step in steps:
        seconds = f"{step['seconds']:.2f} s" if isinstance(step["seconds"], (int, float)) else step["status"]
        print(f"  {step['step']:<6} {step['tool'] or '':<18} {seconds}")
    return 0


def cmd_sessions(args) -> int:
    with _Connection(args) as client:
        sessions = client.sessions()
    if args.json:
        print(json.dumps(sessions, indent=1))
    elif not sessions:
        print("no sessions yet")
    for entry in ([] if args.json else sessions):
        print(_one_line(entry))
    return 0


def cmd_history(args) -> int:
    with _Connection(args) as client:
        session = client.session(args.session)
    if args.json or not isinstance(session, dict):
        print(json.dumps(session, indent=1))
        return 0
    print(_one_line({k: v for k, v in session.items() if k != "turns"}))
    for turn in session.get("turns", []):
        print("  " + _one_line(turn) if isinstance(turn, dict) else f"  {turn}")
    return 0


def cmd_undo(args) -> int:
    with _Connection(args) as client:
        answer = client.undo(args.session)
    print(json.dumps(answer, indent=1) if args.json else f"undone: {_one_line(answer)}")
    return 0


def cmd_redo(args) -> int:
    with _Connection(args) as client:
        answer = client.redo(args.session)
    print(json.dumps(answer, indent=1) if args.json else f"redone: {_one_line(answer)}")
    return 0


def cmd_rollback(args) -> int:
    with _Connection(args) as client:
        answer = client.rollback(args.session, args.turn)
    print(json.dumps(answer, indent=1) if args.json else f"rolled back to turn {args.turn}: {_one_line(answer)}")
    return 0


def cmd_branch(args) -> int:
    with _Connection(args) as client:
        answer = client.branch(args.session, args.turn)
    print(json.dumps(answer, indent=1) if args.json else f"the next edit branches from turn {args.turn}: "
          f"{_one_line(answer)}")
    return 0


def cmd_export_workflow(args) -> int:
    name = "workflow.json" if args.format == "ui" else "workflow_api.json"
    local = Path(args.run).expanduser()
    if local.is_file() and local.name.endswith(".json"):
        local = local.parent
    if local.is_dir():
        source = local / name
        if not source.is_file():
            raise BadInput(f"{local} holds no {name}; is it a run folder written by 'agentic-edit edit'?")
        data = source.read_bytes()
    else:
        if "/" in args.run or not args.run.strip():
            raise BadInput(f"{args.run!r} is neither a run folder here nor a run id (such as edit_20260101-120000_ab12cd)")
        with _Connection(args) as client:
            try:
                data = client.view(FileRef(name, f"{RUNS_SUBFOLDER}/{args.run}", "output"))
            except ComfyError:
                raise BadInput(f"no run {args.run!r} with a {name} on {client.url}") from None
    workflow = json.loads(data)
    text = json.dumps(workflow, indent=1)
    if not args.out:
        print(text)
        return 0
    from .trace import write_json_atomic

    write_json_atomic(Path(args.out), workflow)
    print(f"wrote {args.out} ({args.format} format)")
    return 0


def cmd_batch(args) -> int:
    from .batch import items_from_csv, items_from_paths, run_batch

    if bool(args.csv) == bool(args.inputs):
        raise BadInput("batch: give images/folders with --instruction, or --csv FILE (not both)")
    if args.inputs and not args.instruction:
        raise BadInput("batch: --instruction is required with images or folders")
    try:
        items = items_from_csv(args.csv) if args.csv else items_from_paths(args.inputs, args.instruction)
    except (OSError, ValueError) as exc:
        raise BadInput(f"batch: {exc}") from None
    if not items:
        raise BadInput("batch: no images found in the inputs")

    def show(event) -> None:
        what = f" {event.item.key}" if event.item else ""
        _notify(f"[{event.server}] {event.kind}{what}{': ' + event.message if event.message else ''}")

    report = run_batch(items, args.server or [DEFAULT_URL], args.out, manifest_path=args.manifest, on_event=show,
                       planner=args.planner, timeout=args.timeout)
    if args.json:
        print(json.dumps({"manifest": str(report.manifest), "done": report.done, "failed": report.failed,
                          "pending": report.pending, "skipped": report.skipped}, indent=1))
    else:
        for entry in report.done:
            print(f"done     {entry['key']}: {Path(args.out) / entry['result']}")
        for entry in report.failed:
            print(f"failed   {entry['key']}: {entry.get('error')}")
        for entry in report.pending:
            print(f"pending  {entry['key']}: no server could run it ({entry.get('error') or 'none left'})")
        print(f"{len(report.done)} done ({report.skipped} from an earlier run), {len(report.failed)} failed, "
              f"{len(report.pending)} pending; manifest: {report.manifest}")
    return 0 if report.complete else 1


def cmd_mcp(args) -> int:
    from .mcp_server import serve

    serve(transport=args.transport, host=args.host, port=args.port, server_url=args.server,
          out_dir=args.out, start_local=not args.no_local)
    return 0


def _one_line(entry) -> str:
    if not isinstance(entry, dict):
        return str(entry)
    first = next((entry[k] for k in ("id", "session_id", "turn", "index") if k in entry), None)
    rest = [f"{k}={v}" for k, v in entry.items() if not isinstance(v, (dict, list)) and v != first]
    return " ".join(([str(first)] if first is not None else []) + rest)


# -- parser ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    output.add_argument("-v", "--verbose", action="store_true", help="log what the client does")
    output.add_argument("--no-local", action="store_true",
                        help="never start a local ComfyUI when the server does not answer")
    common = argparse.ArgumentParser(add_help=False, parents=[output])
    common.add_argument("--server", default=DEFAULT_URL, help=f"ComfyUI URL (default {DEFAULT_URL})")
    parser = argparse.ArgumentParser(prog="agentic-edit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    edit = sub.add_parser("edit", parents=[common], help="edit one image with an instruction")
    edit.add_argument("image", help="the image to edit")
    edit.add_argument("instruction", help="what to do, in plain words")
    edit.add_argument("--session", help="continue this session (multi-turn memory)")
    edit.add_argument("--planner", default="offline", choices=("offline", "openai", "local"),
                      help="offline rules (no model), an OpenAI-compatible server (the ComfyUI server reads the key "
                           "from AGENTIC_EDIT_API_KEY or its config file), or the local Qwen2.5-VL")
    edit.add_argument("--reference", help="a reference image (a garment, a style, an object)")
    edit.add_argument("--base-url", help="OpenAI-compatible server for --planner openai")
    edit.add_argument("--model", help="model name on that server")
    edit.add_argument("--out", default=DEFAULT_OUT, help=f"where the run folder is copied (default {DEFAULT_OUT})")
    edit.add_argument("--timeout", type=float, default=1800.0, help="seconds before the job is cancelled")
    edit.set_defaults(func=cmd_edit)

    sub.add_parser("sessions", parents=[common], help="list sessions").set_defaults(func=cmd_sessions)
    for name, run, text in (("history", cmd_history, "a session's turns"), ("undo", cmd_undo, "undo a session's last turn"),
                            ("redo", cmd_redo, "redo what undo took back"),
                            ("rollback", cmd_rollback, "roll a session back to a turn"),
                            ("branch", cmd_branch, "edit on from an older turn (nothing is deleted)")):
        command = sub.add_parser(name, parents=[common], help=text)
        command.add_argument("--session", required=True)
        if name in ("rollback", "branch"):
            command.add_argument("--turn", type=int, required=True)
        command.set_defaults(func=run)

    export = sub.add_parser("export-workflow", parents=[common], help="a run's plan as a ComfyUI workflow")
    export.add_argument("run", help="a run id (printed by 'edit') or a local run folder")
    export.add_argument("--format", choices=("ui", "api"), default="ui", help="ui: opens on the canvas; api: for /prompt")
    export.add_argument("--out", help="file to write (default: stdout)")
    export.set_defaults(func=cmd_export_workflow)

    batch = sub.add_parser("batch", parents=[output], help="many edits over one or more servers, resumable")
    batch.add_argument("inputs", nargs="*", help="images and folders of images")
    batch.add_argument("--instruction", help="the instruction for every image")
    batch.add_argument("--csv", help="a CSV of image,instruction rows instead")
    batch.add_argument("--server", action="append", help="a ComfyUI URL; repeat to spread the work")
    batch.add_argument("--out", default=os.path.join(DEFAULT_OUT, "batch"))
    batch.add_argument("--manifest", help="manifest JSON (default OUT/manifest.json); a rerun skips what is done")
    batch.add_argument("--planner", default="offline", choices=("offline", "openai", "local"))
    batch.add_argument("--timeout", type=float, default=1800.0)
    batch.set_defaults(func=cmd_batch)

    mcp = sub.add_parser("mcp", parents=[common], help="serve the pack's tools over MCP")
    mcp.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    mcp.add_argument("--host", default="127.0.0.1")
    mcp.add_argument("--port", type=int, default=8765)
    mcp.add_argument("--out", default=os.path.join(DEFAULT_OUT, "mcp"), help="where results are kept")
    mcp.set_defaults(func=cmd_mcp)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ComfyError as exc:
        _notify(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _notify("cancelled")
        return 130


if __name__ == "__main__":
    sys.exit(main())
