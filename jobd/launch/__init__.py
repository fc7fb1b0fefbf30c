"""Launching a job: the compiled launcher every job starts as, the plan it follows, and what
it reports back. Everything about a client-chosen path happens in the launcher, inside the job,
as the job's account: the daemon never looks at one."""
