import sys

from famerec.cli import main

sys.exit(main())
