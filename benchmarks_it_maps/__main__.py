import sys

from benchmarks_it_maps.cli import main

sys.exit(main())
