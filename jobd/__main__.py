"""``jobd``: parse the configuration, set up logging, serve until a signal."""

from __future__ import annotations

import logging
import sys

import trio

from jobd.config import ConfigError, load
from jobd.server import serve
from jobd.statedir import StateDirError
from jobd.tls import TLSConfigError


def main(argv: list[str] | None = None) -> None:
    try:
        config, args = load(argv)
    except ConfigError as exc:
        sys.exit(f"jobd: {exc}")
    logging.basicConfig(
        level=args.log_level.upper(),
        format="jobd: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        trio.run(serve, config)
    except TLSConfigError as exc:
        sys.exit(f"jobd: TLS setup failed: {exc}")
    except StateDirError as exc:
        sys.exit(f"jobd: {exc}")
    except OSError as exc:
        sys.exit(f"jobd: {exc}")


if __name__ == "__main__":
    main()
