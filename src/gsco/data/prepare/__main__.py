import sys

from gsco.data.prepare.cli import main

sys.exit(main())
