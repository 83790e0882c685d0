"""`python -m rankdml.sweep run|status|collect ...` (see `rankdml.sweep.cli`)."""
from rankdml.sweep.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
