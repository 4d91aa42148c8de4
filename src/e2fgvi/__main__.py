import sys

from e2fgvi.cli import main

sys.exit(main())
