"""`python -m fertool` (also what `torchrun -m fertool` runs)."""

from fertool.cli import main

if __name__ == "__main__":
    main()
