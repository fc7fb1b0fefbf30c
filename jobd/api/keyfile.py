"""The daemon's private key must be readable by the daemon alone.

Jobs run as other accounts on the same host: a key file that its group or anyone may read
would hand every job the server's identity. Like ssh with an unprotected key, jobd refuses to
start rather than warn.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from jobd.api.tls import TLSConfigError


def check_private(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # loading the key says what is wrong with it
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TLSConfigError(
            f"private key {path} is accessible to others (mode {stat.S_IMODE(mode):04o}): "
            f"run `chmod 600 {path}`"
        )
