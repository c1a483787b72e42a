"""`python -m consumers.cli ...`: the `crisiswatch` command without its console script."""

from consumers.cli.main import main

main()
