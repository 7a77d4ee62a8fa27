from healthmgr.cli.main import main

raise SystemExit(main())
