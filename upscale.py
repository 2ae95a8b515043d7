"""Upscale images and videos x4 with LSANet: a file, a folder or a glob, through the fastest backend available.

The command lives in runtime/command.py (also installed as `lsanet-upscale`); this script only runs it.
"""

import sys

from runtime.command import main

if __name__ == "__main__":
    sys.exit(main())
