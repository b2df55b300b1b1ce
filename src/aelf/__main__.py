from aelf.cli import main

raise SystemExit(main())
