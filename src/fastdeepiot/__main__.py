import sys

from fastdeepiot.cli import main

sys.exit(main())
