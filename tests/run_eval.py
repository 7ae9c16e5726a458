"""Scores the offline planner on the case file: ``python -m tests.run_eval [--json report.json]``.

The pack is imported as ``agentic_edit`` (tests/pack.py), whatever its folder is called; the options
are those of ``agentic_edit.agent.evaluate.main``.
"""

import logging
import sys

from tests.pack import import_pack

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    import_pack()
    from agentic_edit.agent.evaluate import main

    sys.exit(main(sys.argv[1:]))
