"""One-off MedDr questions: ``python demo.py --model DIR --image PATH --question TEXT`` — not available yet."""

import sys


def main() -> int:
    print(
        "demo.py: MedDr inference is not available yet in this release.\n"
        "Available now: `make demo` trains and evaluates a classification specialist on BreastMNIST.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
