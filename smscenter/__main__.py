"""``python -m smscenter`` runs the same CLI as the ``smscenter`` script."""

import sys

from smscenter.cli.main import main

sys.exit(main())
