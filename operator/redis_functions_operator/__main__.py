from redis_functions_operator.cli import main

raise SystemExit(main())
