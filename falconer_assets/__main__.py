from falconer_assets.cli import main

raise SystemExit(main())
