import sys

from dropfetch.cli import main

sys.exit(main())
