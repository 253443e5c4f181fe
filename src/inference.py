"""The seed's documented command, kept working: ``python src/inference.py --input_dir ...``.

Same flags as ``lstv infer``; see ``lstv infer --help``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lstv.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
