"""``python -m poise`` runs the CLI."""

from poise.cli import main

raise SystemExit(main())
