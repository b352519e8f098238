from xtts_client.cli import main

raise SystemExit(main())
