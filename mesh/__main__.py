"""``python -m mesh`` runs the edgemesh command line."""

import sys

from mesh.cli import main

sys.exit(main())
