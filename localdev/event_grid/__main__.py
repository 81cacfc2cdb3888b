"""`python -m localdev.event_grid`: run the local Event Grid (localdev.event_grid.main)."""

from localdev.event_grid.main import main

if __name__ == "__main__":
    main()
