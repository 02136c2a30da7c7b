"""``python benchmarks/run.py [...]``: the same as ``python -m benchmarks [...]``.

Runnable by path from any folder: the repository root is put on ``sys.path`` first,
since the suite's child processes are started as ``python -m benchmarks.<module>``.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.bench import main

    raise SystemExit(main())
