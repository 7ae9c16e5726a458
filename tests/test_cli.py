"""The ``agentic-edit`` command against a real ComfyUI: an edit with its progress and where everything
went, the launcher script, session commands (whatever the server's pack offers), workflow export,
bad input and server trouble with their exit codes, and a local ComfyUI started for the job when no
server answers (with the pack made visible to it, and without)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from agentic_edit.agent import local_server
from agentic_edit.agent.cli import main
from agentic_edit.agent.client import ComfyClient
from agentic_edit.agent.jobs import SESSION_INPUTS, node_inputs
from tests.comfy_harness import comfyui_missing_reason, free_port
from tests.pack import PACK_ROOT

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


@pytest.fixture
def photo(tmp_path, photo_coffee):
    path = tmp_path / "coffee.png"
    Image.fromarray(photo_coffee[::2, ::2]).save(path)
    return path


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_edit_prints_progress_and_where_everything_went(comfy_server, photo, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["edit", str(photo), "write 'CLI' at the bottom", "--server", comfy_server.url, "--out", str(out)])
    printed, progress = capsys.readouterr()
    assert code == 0, progress
    lines = dict(line.split(":", 1) for line in printed.splitlines() if line and not line.startswith(" "))
    result = Path(lines["result"].strip())
    assert result.is_file() and result.parent.parent == out
    assert Path(lines["trace"].strip()) == result.parent / "trace.json"
    assert "s2_image.png" in lines["intermediates"] and "output/agentic_edit/runs/" in lines["on the server"]
    assert "place_region" in printed and "draw_text" in printed
    assert "queued as job" in progress
    assert progress.count("step s1") == 1 and progress.count("step s2") == 1  # one line per step off a TTY
    assert Image.open(result).size == Image.open(photo).size


def test_launcher_runs_the_command_from_a_clone(comfy_server, photo, tmp_path):
    run = subprocess.run([sys.executable, str(PACK_ROOT / "agentic_edit_cli.py"), "edit", str(photo),
                          "write 'LAUNCH' at the top", "--server", comfy_server.url, "--out", str(tmp_path / "o"),
                          "--json"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert Path(summary["result"]).is_file()
    assert [s["tool"] for s in summary["steps"]] == ["place_region", "draw_text"]
    assert summary["server_folder"].endswith(summary["run_id"])


def test_export_workflow_from_the_server_and_from_the_local_copy(comfy_server, photo, tmp_path, capsys):
    assert main(["edit", str(photo), "write 'EXPORT' at the top", "--server", comfy_server.url,
                 "--out", str(tmp_path / "o"), "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    target = tmp_path / "wf.json"
    assert main(["export-workflow", run_id, "--server", comfy_server.url, "--out", str(target)]) == 0
    server_copy = comfy_server.output_dir / "agentic_edit" / "runs" / run_id / "workflow.json"
    assert json.loads(target.read_text()) == json.loads(server_copy.read_text())
    capsys.readouterr()
    assert main(["export-workflow", str(tmp_path / "o" / run_id), "--format", "api"]) == 0
    api = json.loads(capsys.readouterr().out)
    assert {n["class_type"] for n in api.values()} >= {"LoadImage", "AgenticEditPlaceRegion", "AgenticEditDrawText"}
    assert main(["export-workflow", "edit_19700101-000000_000000", "--server", comfy_server.url]) == 2
    assert "no run 'edit_19700101-000000_000000'" in capsys.readouterr().err


def test_bad_input_exits_2_and_writes_nothing(comfy_server, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["edit", str(tmp_path / "missing.png"), "write 'X' at the top", "--server", comfy_server.url,
                 "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"%PDF-1.4 not an image")
    assert main(["edit", str(fake), "write 'X' at the top", "--server", comfy_server.url, "--out", str(out)]) == 2
    assert "is not an image" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit) as usage:
        main(["edit", str(fake)])
    assert usage.value.code == 2


def test_a_job_the_planner_refuses_exits_1_with_the_reason(comfy_server, photo, tmp_path, capsys):
    assert main(["edit", str(photo), "open a KSampler and do magic", "--server", comfy_server.url,
                 "--out", str(tmp_path / "o")]) == 1
    assert "AgenticEditAgentPlanner" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unreachable_server_exits_3(tmp_path, capsys):
    assert main(["sessions", "--server", dead_url(), "--no-local"]) == 3
    assert "no ComfyUI answers at" in capsys.readouterr().err


def _session_routes(url: str) -> bool:
    return ComfyClient(url).request("GET", "/agentic_edit/sessions")[0] != 404


def test_session_commands_match_what_the_server_offers(comfy_server, capsys):
    commands = (["sessions"], ["history", "--session", "no-such-session"], ["undo", "--session", "no-such-session"],
                ["rollback", "--session", "no-such-session", "--turn", "0"])
    for command in commands:
        code = main([*command, "--server", comfy_server.url])
        err = capsys.readouterr().err
        if not _session_routes(comfy_server.url):
            assert code == 3 and "has no session routes yet" in err, (command, err)
        elif command[0] == "sessions":
            assert code == 0, err
        else:
            assert code == 2 and "no session 'no-such-session'" in err, (command, err)


def test_session_flag_on_edit_uses_the_planners_session_input(comfy_server, photo, tmp_path, capsys):
    info = ComfyClient(comfy_server.url).planner_info()
    code = main(["edit", str(photo), "write 'TURN' at the top", "--session", "cli-test-session",
                 "--server", comfy_server.url, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    if not set(SESSION_INPUTS) & node_inputs(info):
        assert code == 3 and "no session memory yet" in err, err
        assert not (tmp_path / "o").exists()
    else:
        assert code == 0, err


def test_pyproject_installs_every_package_of_the_pack():
    """``pip install`` maps the repository root to ``agentic_edit``; a sub-package missing from the
    list would be missing from the install (and the ``agentic-edit`` script would break)."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    assert config["project"]["scripts"]["agentic-edit"] == "agentic_edit.agent.cli:main"
    found = {"agentic_edit"}
    for folder, dirs, files in os.walk(PACK_ROOT):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__")) and d not in ("tests", "bench", "web", "workflows")]
        relative = Path(folder).relative_to(PACK_ROOT)
        if relative.parts and any(f.endswith(".py") for f in files):
            found.add(".".join(("agentic_edit", *relative.parts)))
    assert found == listed


@pytest.fixture
def local_comfy_env(tmp_path, monkeypatch):
    """Where ``agentic-edit`` finds a ComfyUI install to start, with its state in a temp folder."""
    reason = comfyui_missing_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path / "base"
    for sub in ("custom_nodes", "user", "input", "output"):
        (base / sub).mkdir(parents=True)
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    monkeypatch.setenv("PYTHONPYCACHEPREFIX", str(Path.home() / ".cache" / "agentic-edit" / "pycache"))
    monkeypatch.setenv("COMFYUI_PYTHON", sys.executable)
    started = []
    original = local_server.LocalComfyUI.start

    def record(self, *args, **kwargs):
        started.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(local_server.LocalComfyUI, "start", record)
    args = f"--cpu --disable-api-nodes --base-directory {base} --database-url sqlite:///:memory:"
    return base, args, started


def test_a_local_comfyui_is_started_for_the_job_and_stopped_after(local_comfy_env, photo, tmp_path, capsys,
                                                                   monkeypatch):
    base, args, started = local_comfy_env
    monkeypatch.setenv("AGENTIC_EDIT_COMFY_ARGS", args)
    code = main(["edit", str(photo), "write 'LOCAL' at the top", "--server", dead_url(), "--out", str(tmp_path / "o")])
    printed, err = capsys.readouterr()
    assert code == 0, err + "".join(s.log_tail() for s in started)
    assert "starting the local one" in err and "stopping the ComfyUI started for this job" in err
    [local] = started
    assert local.process.poll() is not None, "the local ComfyUI is still running"
    assert local.folder is None, "its temporary folder (pack symlink, paths file, log) was left behind"
    run_id = Path(printed.split("result:", 1)[1].split()[0]).parent.name
    assert (base / "output" / "agentic_edit" / "runs" / run_id / "trace.json").is_file()


def test_a_comfyui_without_the_pack_is_named_as_such(local_comfy_env, photo, tmp_path, capsys, monkeypatch):
    base, args, started = local_comfy_env
    monkeypatch.setenv("AGENTIC_EDIT_COMFY_ARGS", args + " --disable-all-custom-nodes")
    code = main(["edit", str(photo), "write 'NOPE' at the top", "--server", dead_url(), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "runs without the Agentic Edit pack" in err and "custom_nodes" in err
    assert started and started[0].process.poll() is not None
    assert not (tmp_path / "o").exists()


def test_the_command_imports_no_engine_node_or_comfyui():
    """agent/ plans and drives tools; ComfyUI runs them. The command must start without torch."""
    code = ("import sys, agentic_edit_cli; agentic_edit_cli.load_pack()\n"
            "import agentic_edit.agent.cli, agentic_edit.agent.batch, agentic_edit.agent.mcp_server\n"
            "import agentic_edit.agent.tool_job, agentic_edit.agent.local_server\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'comfy', 'comfy_api', 'folder_paths')\n"
            "       or m.startswith(('agentic_edit.engines', 'agentic_edit.nodes', 'agentic_edit.models'))]\n"
            "print(bad)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACK_ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_redo_and_branch_commands_move_a_real_session(comfy_server, tmp_path, capsys):
    sid = "cli-redo-branch"
    image = str(PACK_ROOT / "workflows" / "inputs" / "agentic_edit_sample.png")
    assert main(["edit", image, "write 'A' at the top", "--session", sid, "--server", comfy_server.url,
                 "--out", str(tmp_path)]) == 0
    assert main(["undo", "--session", sid, "--server", comfy_server.url]) == 0
    assert main(["redo", "--session", sid, "--server", comfy_server.url]) == 0
    assert "redone" in capsys.readouterr().out
    assert main(["branch", "--session", sid, "--turn", "0", "--server", comfy_server.url]) == 0
    assert "branches from turn 0" in capsys.readouterr().out
    assert main(["branch", "--session", sid, "--turn", "99", "--server", comfy_server.url]) == 2
    assert "turn" in capsys.readouterr().err
