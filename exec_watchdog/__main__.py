from __future__ import annotations

import sys

from exec_watchdog.cli import main

sys.exit(main())
