"""Where jobd finds the system's tools: one shell, one default search path."""

SHELL = "/bin/sh"
# A job's PATH unless its request sets one, and where jobd looks for unshare, mount, timeout.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
