"""`python -m localdev.runner`: run the local runner (localdev.runner.main)."""

import sys

from localdev.runner.main import main

if __name__ == "__main__":
    sys.exit(main())
