"""``python -m train.toyworld build``: see train.toyworld.build."""

from .build import main

if __name__ == "__main__":  # worker processes that import this module must not start a build
    main()
