"""`python -m pygent.cli ...` is `pygent-runner ...`."""

from . import main

main()
