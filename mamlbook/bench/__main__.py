"""`python -m mamlbook.bench --one CONFIG`: one benchmark configuration in a fresh process."""

from .runner import main

raise SystemExit(main())
