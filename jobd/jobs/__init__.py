"""Running jobs: the manager (every job, its history, its quotas), one supervisor per running
job, the output path (pipes, broadcast, log, followers), the store and the state directory,
retention of finished output."""
