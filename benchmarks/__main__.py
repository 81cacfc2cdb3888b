"""`python -m benchmarks [--quick] [--out DIR] [--only GROUPS] [--markdown] [--strict]`."""

import sys

from benchmarks.run import main

sys.exit(main())
