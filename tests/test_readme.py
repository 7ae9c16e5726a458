"""The README names every node and every saved workflow, and gives the command CI runs."""

from agentic_edit.catalogue import all_tools
from tests.pack import PACK_ROOT

README = (PACK_ROOT / "README.md").read_text()


def test_every_node_is_in_the_readme():
    missing = [t.node_id for t in all_tools() if f"`{t.node_id}`" not in README]
    assert not missing, f"README's node list lacks {missing}"


def test_every_workflow_is_in_the_readme():
    names = [p.stem for p in (PACK_ROOT / "workflows" / "api").glob("*.json")]
    assert all(f"`{n}`" in README for n in names), names


def test_ci_runs_the_readme_test_command():
    assert "python -m pytest -q" in README
    assert '-m pytest -q' in (PACK_ROOT / ".ci" / "run").read_text()
