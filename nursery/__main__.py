from nursery.cli import main

raise SystemExit(main())
