"""Batch edits over two real ComfyUI servers: one is killed while it runs a job, its job finishes on
the other, the manifest records every item, and a rerun does only what is left."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
from PIL import Image

from agentic_edit.agent.batch import BatchItem, Manifest, items_from_csv, items_from_paths, run_batch
from agentic_edit.agent.cli import main
from agentic_edit.agent.client_errors import BadInput
from tests.comfy_harness import ComfyServer, free_port

INSTRUCTION = "write 'BATCH' at the top"


def make_images(folder, photo, count: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):  # different crops and sizes: every job is new to ComfyUI's cache
        crop = photo[i * 7:i * 7 + 160 + 8 * i, i * 5:i * 5 + 200 + 4 * i]
        paths.append(folder / f"img{i:02d}.png")
        Image.fromarray(crop).save(paths[-1])
    return paths


def history_size(server) -> int:
    return len(server.get_json("/history"))


@pytest.mark.comfy
@pytest.mark.slow
def test_a_server_stopped_mid_batch_hands_its_job_to_the_other_and_a_rerun_finishes(
        comfy_server, tiny_models_dir, tmp_path_factory, tmp_path, photo_chelsea):
    make_images(tmp_path / "in", photo_chelsea, 8)
    broken = tmp_path / "in" / "zz_broken.png"
    broken.write_text("this is not a picture")
    out = tmp_path / "out"
    second = ComfyServer(tmp_path_factory.mktemp("comfy_b"), models_dir=tiny_models_dir).start()
    killed: dict = {}
    events = []

    def on_job_event(server, item, event):
        # SIGKILL the second server while its second job is on it (queued and running there)
        if server == second.url and event.kind == "executing" and event.node == "agent":
            done_there = [e for e in events if e.kind == "done" and e.server == second.url]
            if done_there and not killed:
                killed["item"] = item.key
                second.kill()

    try:
        report = run_batch(items_from_paths([tmp_path / "in"], INSTRUCTION), [comfy_server.url, second.url], out,
                           on_event=events.append, on_job_event=on_job_event,
                           client_options={"reconnect_window": 2.0})
    finally:
        second.stop()
    assert killed, f"the second server never ran two jobs: {[(e.kind, e.server) for e in events]}"

    manifest = json.loads((out / "manifest.json").read_text())["items"]
    assert len(report.done) == 8 and [e["key"] for e in report.failed] == [BatchItem(str(broken), INSTRUCTION).key]
    assert not report.pending and not report.complete
    assert "not an image" in report.failed[0]["error"]
    lost = manifest[killed["item"]]
    assert lost["status"] == "done" and lost["server"] == comfy_server.url and lost["attempts"] == 2
    assert {e["server"] for e in report.done} == {comfy_server.url, second.url}, "both servers did work"
    assert [e.kind for e in events if e.server == second.url][-2:] == ["requeued", "server_down"]
    for entry in report.done:
        assert (out / entry["result"]).is_file() and (out / entry["folder"] / "trace.json").is_file()
        assert entry["result"].startswith(entry["key"] + "/")
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a partial download was left"

    # The user fixes the broken file; a rerun (the dead server still listed) does only that item.
    Image.fromarray(photo_chelsea[:120, :180]).save(broken)
    jobs_before = history_size(comfy_server)
    rerun_events = []
    rerun = run_batch(items_from_paths([tmp_path / "in"], INSTRUCTION), [second.url, comfy_server.url], out,
                      on_event=rerun_events.append, client_options={"reconnect_window": 1.0})
    assert rerun.complete and len(rerun.done) == 9 and rerun.skipped == 8
    assert history_size(comfy_server) == jobs_before + 1
    assert [e.kind for e in rerun_events].count("skipped") == 8
    assert any(e.kind == "server_down" and e.server == second.url for e in rerun_events)
    again = json.loads((out / "manifest.json").read_text())["items"]
    assert again[killed["item"]] == lost, "a done item was touched by the rerun"


@pytest.mark.comfy
@pytest.mark.slow
def test_batch_command_from_a_csv(comfy_server, tmp_path, photo_astronaut, capsys):
    Image.fromarray(photo_astronaut[::4, ::4]).save(tmp_path / "a.png")
    (tmp_path / "jobs.csv").write_text("image,instruction\na.png,write 'CSV' at the bottom\n"
                                       "missing.png,write 'GONE' at the top\n")
    out = tmp_path / "out"
    code = main(["batch", "--csv", str(tmp_path / "jobs.csv"), "--server", comfy_server.url, "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "1 done (0 from an earlier run), 1 failed, 0 pending" in printed
    assert "does not exist" in printed
    done_line = next(line for line in printed.splitlines() if line.startswith("done"))
    assert Path(done_line.split(": ", 1)[1]).is_file()


def test_batch_with_no_live_server_leaves_everything_pending(tmp_path, photo_chelsea):
    images = make_images(tmp_path / "in", photo_chelsea, 2)
    events = []
    report = run_batch(items_from_paths(images, INSTRUCTION), [f"http://127.0.0.1:{free_port()}"], tmp_path / "out",
                       on_event=events.append)
    assert len(report.pending) == 2 and not report.done and not report.failed
    assert [e.kind for e in events] == ["server_down"] and "no ComfyUI answers" in events[0].message
    manifest = Manifest(tmp_path / "out" / "manifest.json")
    assert {e["status"] for e in manifest.data["items"].values()} == {"pending"}


def test_inputs_from_folders_files_and_csv(tmp_path):
    (tmp_path / "pics").mkdir()
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / "pics" / name).write_bytes(b"x")
    items = items_from_paths([tmp_path / "pics", tmp_path / "single.webp"], "do it")
    assert [BatchItem(str(tmp_path / "pics" / n), "do it") for n in ("a.JPG", "b.png")] == items[:2]
    assert items[2].image == str(tmp_path / "single.webp")
    (tmp_path / "list.csv").write_text("# a comment\npics/a.JPG, make it red \n\npics/b.png,write 'X' at the top\n")
    rows = items_from_csv(tmp_path / "list.csv")
    assert rows == [BatchItem(str(tmp_path / "pics" / "a.JPG"), "make it red"),
                    BatchItem(str(tmp_path / "pics" / "b.png"), "write 'X' at the top")]
    assert len({r.key for r in rows}) == 2 and rows[0].key.startswith("a-")
    (tmp_path / "bad.csv").write_text("only_an_image.png\n")
    with pytest.raises(ValueError, match="row 1"):
        items_from_csv(tmp_path / "bad.csv")


def test_manifest_of_a_batch_that_died_mid_job_is_resumable(tmp_path):
    item = BatchItem("/x/a.png", "do it")
    manifest = Manifest(tmp_path / "m.json")
    manifest.update(item, status="running", server="http://a", attempts=1)
    assert Manifest(tmp_path / "m.json").entry(item)["status"] == "pending"
    (tmp_path / "junk.json").write_text("[1, 2")
    with pytest.raises(BadInput, match="not a batch manifest"):
        Manifest(tmp_path / "junk.json")
    with pytest.raises(ValueError, match="at least one --server"):
        run_batch([item], [], tmp_path)
