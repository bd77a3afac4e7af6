import sys

from unet.cli import main

sys.exit(main())
