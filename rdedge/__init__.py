"""The ``rdedge`` command, above every other package: ``train``, ``export``, ``evaluate``, ``predict``,
``build-engine``, ``bench`` and ``demo``, one module each in :mod:`rdedge.commands`.

It imports ``sdk`` (the runtime), ``train``, ``export`` and ``benchmarks``; none of them imports it. Sub-commands
that need PyTorch import it only when run, so ``rdedge predict`` and ``rdedge evaluate`` work with the runtime-only
install.
"""
