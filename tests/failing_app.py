"""An ASGI app module that refuses to start the way service.asgi does on a bad configuration (exit status 3),
for the test that `serve --workers N` passes a worker's start-up failure on to its own exit status."""

import sys

sys.exit(3)
