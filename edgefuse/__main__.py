from edgefuse.cli import main

raise SystemExit(main())
