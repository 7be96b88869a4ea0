"""`python -m wsbroadcast`, the same as the `wsbroadcast` command."""

from .cli import main

if __name__ == "__main__":
    main()
