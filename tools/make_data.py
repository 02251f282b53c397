"""Rebuild assets/fmnist-data.npz: a calibration sample of the training split and the test split.

Usage: python tools/make_data.py [--calib 4096] [--seed 0]
Needs the full Fashion-MNIST (Debian's `dataset-fashion-mnist`, or torchvision's download).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ptq_core.data import EMBEDDED_FILE, fashion_mnist_arrays  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calib", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    arrays, source = fashion_mnist_arrays(None, download=True)
    idx = np.sort(np.random.default_rng(args.seed).choice(len(arrays["train_y"]), args.calib, replace=False))
    np.savez_compressed(
        EMBEDDED_FILE,
        calib_x=arrays["train_x"][idx],
        calib_y=arrays["train_y"][idx],
        calib_index=idx,
        test_x=arrays["test_x"],
        test_y=arrays["test_y"],
    )
    print(f"wrote {EMBEDDED_FILE} ({EMBEDDED_FILE.stat().st_size / 1e6:.1f} MB) from {source}")


if __name__ == "__main__":
    main()
