"""``python -m flare_eval`` runs the ``flare-eval`` command line."""

import sys

from flare_eval.cli.main import main

sys.exit(main())
