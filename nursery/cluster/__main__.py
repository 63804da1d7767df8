"""``python -m nursery.cluster ...``: the same commands as ``nursery cluster ...``."""

import sys

from nursery.cluster._commands import main

sys.exit(main())
