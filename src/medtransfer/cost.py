"""``python -m medtransfer.cost``: a study's GPU-hours before it runs (medtransfer.reporting.cost)."""

from medtransfer.reporting.cost import main

if __name__ == "__main__":
    raise SystemExit(main())
