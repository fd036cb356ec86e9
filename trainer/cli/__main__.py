"""``python -m trainer.cli ...`` runs the ``trainer`` command (as bench scripts and tests do)."""

from trainer.cli import main

main()
