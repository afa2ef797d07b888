#!/usr/bin/env python3
"""Write a realistic CSV of N form responses (default 20000) in the upload format.

Usage: scripts/generate_dummy_data.py [N] [--out PATH] [--seed S]   (default PATH: data/responses.csv)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.sample_data import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
