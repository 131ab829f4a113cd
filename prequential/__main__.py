import sys

from prequential.cli import main

sys.exit(main())
