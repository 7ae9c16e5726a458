"""python -m tests.tiny_models --out DIR [--only NAME ...]

Writes the tiny checkpoints into DIR in ComfyUI's models-folder layout (DIR/<folder>/<name>), so
that a ComfyUI started with DIR as its models directory (or through extra_model_paths.yaml) runs
the pack's saved workflows unchanged.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.tiny_models", description=__doc__.splitlines()[2])
    parser.add_argument("--out", required=True, type=Path, help="models folder to write into")
    parser.add_argument("--only", nargs="*", help="build only these model names")
    parser.add_argument("--list", action="store_true", help="list the tiny models and exit")
    args = parser.parse_args(argv)

    from tests.pack import import_pack
    from tests.tiny_models import all_models, ensure_models

    import_pack()
    if args.list:
        for m in all_models():
            print(f"{m.folder}/{m.name}\t{m.description}")
        return 0
    built = ensure_models(args.out, args.only)
    for name, path in built.items():
        print(f"{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
