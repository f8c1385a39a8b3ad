"""`python -m gateway` is the `killgate` console script."""

from gateway.cli import main

raise SystemExit(main())
