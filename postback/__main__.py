import sys

from postback.cli import main

sys.exit(main())
