"""``python -m siem_plugins`` is ``siem-plugins``."""

import sys

from siem_plugins.cli import main

sys.exit(main())
