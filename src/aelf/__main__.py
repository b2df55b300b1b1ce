from aelf.apps.cli import main

raise SystemExit(main())
