"""`python -m dashboards build --out DIR` (the same commands as `crisiswatch dashboards`)."""

from __future__ import annotations

from dashboards.command import main

if __name__ == "__main__":
    main()
