import sys

from amiko.emulate.emulator import main

sys.exit(main())
