import sys

from tests.system.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
