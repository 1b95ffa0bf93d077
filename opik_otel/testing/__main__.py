import sys

from opik_otel.testing.cli import main

sys.exit(main())
