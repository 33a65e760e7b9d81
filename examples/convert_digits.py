"""Convert a CNN trained on scikit-learn's digits
==============================================

Convert a small CNN trained on scikit-learn's digits (offline) and compare the SNN with the ANN.

Command line::

    python examples/convert_digits.py --samples 200 --T 32
"""

import argparse

from biosnn.demo import run_demo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--backend", default="runtime")
    p.add_argument("--out", default="runs/convert_digits")
    args = p.parse_args(argv)
    return run_demo(out=args.out, backend=args.backend, samples=args.samples, T=args.T)


if __name__ == "__main__":
    main()
