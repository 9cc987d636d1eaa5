"""`python evaluate.py ...` is `captioner evaluate ...`."""

import sys

from captioner.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
