"""``python -m contrasphere.cli ...`` (what ``torchrun -m contrasphere.cli train RECIPE`` runs on each process)."""

import sys

from . import main

sys.exit(main())
