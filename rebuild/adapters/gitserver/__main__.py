"""``python -m rebuild.adapters.gitserver``: how :func:`~rebuild.adapters.gitserver.daemon.spawn` starts a detached server."""

import sys

from rebuild.adapters.gitserver.server import main

sys.exit(main())
