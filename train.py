"""`python train.py ...` is `captioner train ...`."""

import sys

from captioner.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
