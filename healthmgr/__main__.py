from healthmgr.cli import main

raise SystemExit(main())
