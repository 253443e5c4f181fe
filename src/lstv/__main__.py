from lstv.cli import main

raise SystemExit(main())
