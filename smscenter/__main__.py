"""``python -m smscenter`` runs the same CLI as the ``smscenter`` script."""

import sys

from .cli import main

sys.exit(main())
