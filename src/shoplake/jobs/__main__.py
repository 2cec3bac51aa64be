"""`python -m shoplake.jobs --lake L jobs task ...`: the runner's task workers (only the jobs commands are
loaded; see `shoplake.jobs.cli.worker_main`)."""

from shoplake.jobs.cli import worker_main

worker_main()
