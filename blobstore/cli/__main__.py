import sys

from blobstore.cli import main

sys.exit(main())
