"""``python -m sessionhub.cli``: the `sessionhub` command without the console script."""

from . import main

main()
