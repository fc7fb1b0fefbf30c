"""Policy: who may do what (auth, revocation), what a job may ask for and gets (limits,
ceilings, quotas), which account and isolation it runs with. Decisions, not mechanisms: no
process, cgroup or socket is touched here."""
