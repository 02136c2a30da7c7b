"""``python -m benchmarks``: see benchmarks/bench.py and docs/performance.md."""

from benchmarks.bench import main

raise SystemExit(main())
