"""``python -m rdedge``: the ``rdedge`` command."""

from rdedge.main import main

raise SystemExit(main())
