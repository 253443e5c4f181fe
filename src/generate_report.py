"""The seed's documented command, kept working: ``python src/generate_report.py --csv ...``.

Same flags as ``lstv report``; see ``lstv report --help``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lstv.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
