"""`python -m proconsul` is the same as the `proconsul` command."""

from proconsul.cli.main import main

raise SystemExit(main())
