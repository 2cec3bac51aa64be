"""Jobs: declared DAGs of tasks (ingest, build, train, score) that shoplake runs, resumes, schedules and
exports, with every task attempt recorded in `ops.job_runs`. See docs/JOBS.md."""
