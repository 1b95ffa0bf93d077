import sys

try:
    from opik_otel.testing.cli import main

    sys.exit(main())
except KeyboardInterrupt:  # Ctrl-C before main() put its own handler in place
    sys.exit(130)
