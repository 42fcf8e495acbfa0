"""One stage function per command: ``prepare``, ``simulate`` (and later ``train``, ``zoom``, ``eval``)."""
