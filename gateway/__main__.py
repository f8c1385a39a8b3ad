"""`python -m gateway` is the `killgate` console script."""

from gateway.cli.main import main

raise SystemExit(main())
