"""``python -m train.toyworld build``: see train.toyworld.build."""

from .build import main

main()
