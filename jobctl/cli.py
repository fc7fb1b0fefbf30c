"""The ``jobctl`` command line: arguments, and the policy that turns failures into exit codes.

Only the standard library (and, for the commands that start a job, :mod:`jobctl.units`,
which uses nothing else) is imported here. asyncio, grpclib and protobuf cost most of a
command's start-up time, so they are imported (through :mod:`jobctl.commands`) once a command
actually runs, and ``jobctl --help`` or a usage error never pays for them. The other savings
here each serve issue 7's targets: ``jobctl status`` and ``jobctl --help`` within 1.2x the time
of a Python that only imports grpclib and protobuf (BENCHMARKS.md; status is at 1.15x).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import sys

TYPE_CHECKING = False  # not `from typing import`: typing costs ~2 ms of `jobctl status`

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any, NoReturn, TypeVar

    T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECT = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

DEFAULT_SERVER = "localhost:9090"
DEFAULT_CACERT = "ca/ca.crt"
DEFAULT_CERT = "ca/client_0.pem"
DEFAULT_LIST_LIMIT = 50
MAX_TAIL_LINES = 2**32 - 1  # StreamOutputRequest.tail_lines is a uint32
DEFAULT_INTERVAL = 2.0  # seconds between refreshes of `status --watch` and `top`
MIN_INTERVAL = 0.1
TOP_MAX_JOBS = 50  # as jobctl.commands', which this module does not import

EPILOG = f"""\
environment:
  JOBCTL_SERVER, JOBCTL_CACERT, JOBCTL_CERT, JOBCTL_KEY   defaults for the options above
  JOBCTL_CONTEXT, JOBCTL_CONFIG                          the context, the config file
  JOBCTL_DEBUG=1                                         print a traceback on unexpected errors

exit status:
  {EXIT_OK}    success
  {EXIT_FAILED}    the server refused the request (not found, permission denied, invalid
       argument, ...), the job failed to start, or an unexpected error
  {EXIT_USAGE}    usage error: bad arguments, bad server address, unusable certificate files,
       a bad config file or an unknown context
  {EXIT_CONNECT}    cannot reach the server: connection refused or broken, TLS handshake
       failed, server unavailable
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); a followed job keeps running
  {EXIT_BROKEN_PIPE}  standard output was closed early (e.g. piped into head)

  `status --watch` exits 0 once the job has ended, and `top` on Ctrl-C.

  `jobctl run` exits with the job's own status instead, once it has started: its exit
  code; 128+N when signal N ended it (137 for SIGKILL, and for the OOM killer); 1 when it
  failed to start or was lost; 130 when Ctrl-C detached from it. Errors before the job
  starts or while following it keep the codes above.
"""

RUN_EPILOG = """\
Takes the options of `jobctl start`: jobctl run --memory 256M -- make -j4

Ctrl-C stops the job (SIGTERM, then SIGKILL after the server's grace period) while its
output goes on until it has ended, and jobctl exits with its status; a second Ctrl-C kills
it at once (grace 0). With --detach-on-interrupt, Ctrl-C leaves the job running instead
(jobctl prints its id and exits 130); `jobctl logs -f ID` picks it up again.

exit status: the job's exit code; 128+N when signal N ended it (OOM kill: 137); 1 when it
failed to start or was lost; 130 when detached. Errors of jobctl itself: see jobctl --help.
A job that did not exit by itself gets a last line on stderr saying how it ended, e.g.
"jobctl: job ID killed: out of memory (limit 64 MiB)".
"""

START_EPILOG = """\
No shell runs: ARGV is executed as given. A single argument containing whitespace is split
like a shell would split it (no expansion), so `jobctl start 'sleep 2'` runs sleep with the
argument 2; quote inside it to keep spaces: `jobctl start "'/opt/my tool' -v"`.

With limits: `jobctl start --cpu 0.5 --memory 256M --pids 64 -- make -j4`. A limit above your
role's maximum, or one the server cannot enforce, is refused and no job starts.

With isolation: `jobctl start --isolate pid,mount -- ps -e` runs the job in its own PID and
mount namespaces (it is PID 1, sees only its own processes and has a private /tmp);
`--isolate all` adds network (loopback only), uts and ipc; `--no-isolate` asks for none.
Without either the job gets your role's default; asking for less than the server lets your
role have is refused.
"""

CONFIG_EPILOG = """\
The config file (TOML):

  current = "dev"                  # the context used when none is named

  [contexts.dev]
  server = "localhost:9090"
  cacert = "ca/ca.crt"             # relative paths: from the config file's folder
  cert = "ca/client_0.pem"
  # key = "..."                    # only when the key is not in the cert file

Precedence: flags, then JOBCTL_SERVER/CACERT/CERT/KEY, then the context, then the defaults.
"""

LOGS_EPILOG = """\
When the connection breaks after some output, the error names the command that prints the
rest (the same options with --offset N). If the job's output went past the server's per-job
cap, a note on stderr says how much was dropped.
"""


def _error(message: str) -> None:
    # If stderr is gone too, the exit status is all that is left to say it.
    with contextlib.suppress(OSError):
        print(f"jobctl: {message}", file=sys.stderr, flush=True)


def env_pair(text: str) -> tuple[str, str]:
    """Parse ``KEY=VALUE`` (VALUE may be empty or contain ``=``)."""
    key, eq, value = text.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r} (no '=')")
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r} (empty KEY)")
    return key, value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected zero or more seconds, got {text!r}")
    return value


def interval(text: str) -> float:
    value = seconds(text)
    if value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(f"expected at least {MIN_INTERVAL} seconds, got {text!r}")
    return value


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {text!r}")
    return value


def line_count(text: str) -> int:
    value = positive(text)
    if value > MAX_TAIL_LINES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_TAIL_LINES} lines, got {text!r}")
    return value


def offset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"expected an offset of 0 or more, got {text!r}")
    return value


def _limit(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a :mod:`jobctl.units` parser: its message, as a usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """The resource limit options of a command that starts a job: ``args.cpu``, ``.memory``,
    ``.io_read_bps``, ``.io_write_bps``, ``.io_device``, ``.pids``; None when not given."""
    from jobctl import units  # only commands that start a job parse sizes

    group = parser.add_argument_group(
        "resource limits",
        "Unset limits take the server's defaults; none may exceed your role's maximum.",
    )
    group.add_argument(
        "--cpu",
        metavar="CORES",
        type=_limit(units.parse_cpu),
        help="CPU time in cores: 0.5, 50%%, 500m (millicores), 2",
    )
    group.add_argument(
        "--memory",
        metavar="SIZE",
        type=_limit(units.parse_size),
        help="memory in bytes, K/M/G/T binary suffixes: 512K, 256M, 1G",
    )
    group.add_argument(
        "--io-read-bps",
        metavar="SIZE",
        type=_limit(units.parse_rate),
        help="disk read bandwidth per second, e.g. 10M",
    )
    group.add_argument(
        "--io-write-bps",
        metavar="SIZE",
        type=_limit(units.parse_rate),
        help="disk write bandwidth per second, e.g. 10M",
    )
    group.add_argument(
        "--io-device",
        metavar="DEV",
        type=_limit(units.parse_device),
        help="the disk of the io limits: MAJOR:MINOR, or a path on the server "
        "(default: the server's)",
    )
    group.add_argument(
        "--pids",
        metavar="N",
        type=_limit(units.parse_count),
        help="most tasks (processes and threads) at once",
    )


NAMESPACES = ("pid", "mount", "network", "uts", "ipc")


def namespaces(text: str) -> tuple[str, ...]:
    """``pid,mount,net,uts,ipc`` (any of them) or ``all``: the names, as the API spells them."""
    chosen: set[str] = set()
    for word in (w.strip().lower() for w in text.split(",")):
        if word == "all":
            chosen.update(NAMESPACES)
        elif word in ("net", "network"):
            chosen.add("network")
        elif word in NAMESPACES:
            chosen.add(word)
        else:
            raise argparse.ArgumentTypeError(
                f"unknown namespace {word!r}: expected pid, mount, net, uts, ipc or all, "
                "separated by commas"
            )
    return tuple(name for name in NAMESPACES if name in chosen)


def add_isolation_options(parser: argparse.ArgumentParser) -> None:
    """``args.isolate``: the namespaces asked for, () for none, None for the role default."""
    group = parser.add_argument_group(
        "isolation", "Linux namespaces for the job; without these options, your role's default."
    ).add_mutually_exclusive_group()
    group.add_argument(
        "--isolate",
        metavar="LIST",
        type=namespaces,
        help="run in these namespaces: pid,mount,net,uts,ipc (comma-separated) or all",
    )
    group.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_const",
        const=(),
        help="run in the host's namespaces (if your role may)",
    )


def command_argv(words: Sequence[str]) -> list[str]:
    """The argv to run from the words after ``start``; raises ValueError when there is none."""
    argv = list(words)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if len(argv) == 1 and any(c.isspace() for c in argv[0]):
        try:
            argv = shlex.split(argv[0])
        except ValueError as exc:
            raise ValueError(f"cannot split {argv[0]!r} into arguments: {exc}") from None
    if not argv:
        raise ValueError("no command given: put it after --, e.g. jobctl start -- sleep 5")
    return argv


class _CommandAction(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        try:
            setattr(namespace, self.dest, command_argv(values or []))
        except ValueError as exc:
            parser.error(str(exc))


def add_start_options(parser: argparse.ArgumentParser) -> None:
    """What a command that starts a job takes: ``--env``, ``--cwd``, limits, isolation, ARGV."""
    parser.add_argument(
        "--env",
        metavar="KEY=VALUE",
        type=env_pair,
        action="append",
        default=[],
        help="add to the job's environment (repeatable)",
    )
    parser.add_argument(
        "--cwd", metavar="DIR", default="", help="working directory on the server (default: /)"
    )
    add_limit_options(parser)
    add_isolation_options(parser)
    parser.add_argument(
        "argv",
        metavar="ARGV",
        nargs=argparse.REMAINDER,
        action=_CommandAction,
        help="the program and its arguments, best after --",
    )


class _Explicit(argparse.Action):
    """Store the value and note in ``explicit`` that a flag gave it (a context's value then
    does not replace it)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.explicit = {*getattr(namespace, "explicit", ()), self.dest}


def _now(env: Mapping[str, str], variable: str, value: str) -> str:
    if env.get(variable):
        return f"now: {value}, from {variable}"
    return f"default: the context's, else {value}"


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it ($COLUMNS, else stdout's
    terminal, else 80), without importing shutil. argparse makes a formatter for every
    argument added, and its own formatter imports shutil for the width: with it zlib, bz2
    and lzma, 1.5 ms of every command's start."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns if stdout else 0
        except (ValueError, OSError):  # closed, detached, not a terminal
            columns = 0
    return columns or 80


def _plain_formatter(*, prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=_columns() - 2)


def _raw_formatter(*, prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, width=_columns() - 2)


class _Parser(argparse.ArgumentParser):
    """jobctl's parsers: argparse's help formatting without shutil, and a command's arguments
    added only once that command is used (``fill``; see :func:`build_parser`)."""

    def __init__(
        self, *args: Any, fill: Callable[[argparse.ArgumentParser], None] | None = None, **kw: Any
    ) -> None:
        kw.setdefault("formatter_class", _plain_formatter)
        super().__init__(*args, **kw)
        self._fill = fill

    def fill(self) -> None:
        """Add this command's arguments, if they are still to be added."""
        fill, self._fill = self._fill, None
        if fill is not None:
            fill(self)

    # Everything that reads the arguments goes through one of these.
    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        self.fill()
        return super().parse_known_args(*args, **kwargs)

    def format_usage(self) -> str:
        self.fill()
        return super().format_usage()

    def format_help(self) -> str:
        self.fill()
        return super().format_help()


# The options before the command that take a value, as the parser below defines them.
_GLOBAL_VALUE_OPTIONS = ("--server", "--cacert", "--cert", "--key", "--context", "--config")
COMMANDS = ("start", "run", "stop", "status", "list", "top", "config", "completion", "logs")


def command_named(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, when that is plain to see without parsing; else None.

    Skips the options before it that take a value (``--server X``, ``--server=X``, or an
    unambiguous abbreviation, as argparse allows). Anything else before it (``--help``, an
    unknown option, ``--``) gives None, and the whole parser decides.
    """
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
        if word.startswith("--") and "=" in word:
            name = word.split("=", 1)[0]
            if any(o.startswith(name) for o in _GLOBAL_VALUE_OPTIONS) and name != "--":
                continue
            return None
        if word != "--" and any(o.startswith(word) for o in _GLOBAL_VALUE_OPTIONS):
            next(words, None)
            continue
        return None
    return None


def build_parser(
    environ: Mapping[str, str] | None = None,
    *,
    lazy: bool = False,
    argv: Sequence[str] | None = None,
) -> argparse.ArgumentParser:
    """jobctl's argument parser. With ``lazy``, each command's own arguments are added only
    when that command is parsed or its help shown: a run uses one command, and adding every
    command's arguments costs more than all the rest of parsing. With ``lazy`` and the
    ``argv`` it will parse, when that names a command plainly (:func:`command_named`), the
    other commands are left out altogether (~1 ms of every run)."""
    env = os.environ if environ is None else environ
    only = command_named(argv) if lazy and argv is not None else None
    parser = _Parser(
        prog="jobctl",
        description="Run and watch processes on a jobd server over mutual TLS.",
        epilog=EPILOG,
        formatter_class=_raw_formatter,
    )
    server = env.get("JOBCTL_SERVER") or DEFAULT_SERVER
    cacert = env.get("JOBCTL_CACERT") or DEFAULT_CACERT
    cert = env.get("JOBCTL_CERT") or DEFAULT_CERT
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=server,
        action=_Explicit,
        help=f"jobd address, [::1]:PORT for IPv6 ({_now(env, 'JOBCTL_SERVER', server)})",
    )
    parser.add_argument(
        "--cacert",
        metavar="FILE",
        default=cacert,
        action=_Explicit,
        help=f"CA certificate that signed the server's ({_now(env, 'JOBCTL_CACERT', cacert)})",
    )
    parser.add_argument(
        "--cert",
        metavar="FILE",
        default=cert,
        action=_Explicit,
        help=f"client certificate, may include the key ({_now(env, 'JOBCTL_CERT', cert)})",
    )
    parser.add_argument(
        "--key",
        metavar="FILE",
        default=env.get("JOBCTL_KEY") or None,
        action=_Explicit,
        help="client key, if not in the --cert file",
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        default=None,
        help="use this context of the config file (default: $JOBCTL_CONTEXT, else the "
        "file's `current`)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="the config file (default: $JOBCTL_CONFIG, else "
        "$XDG_CONFIG_HOME/jobctl/config.toml, ~/.config/jobctl/config.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, fill: Callable[[argparse.ArgumentParser], None], **kw: Any) -> None:
        if only is not None and name != only:
            return
        subparser = sub.add_parser(name, fill=fill, **kw)
        if not lazy:
            subparser.fill()

    command(
        "start",
        _start_arguments,
        help="start a job and print its id",
        description="Start a job and print only its id.",
        epilog=START_EPILOG,
    )
    command(
        "run",
        _run_arguments,
        help="start a job, print its output live, exit with its exit code",
        description="Start a job, write its stdout to stdout and its stderr to stderr as it\n"
        "runs (byte for byte, as `logs -f` does), and exit with the job's exit status.",
        epilog=RUN_EPILOG,
        formatter_class=_raw_formatter,
    )
    command(
        "stop",
        _stop_arguments,
        help="stop a job and print how it ended",
        description="Stop a job (SIGTERM, then SIGKILL after the grace "
        "period) and print how it ended.",
    )
    command(
        "status",
        _status_arguments,
        help="show one job",
        description="Show one job. With --watch, follow it until it ends: on a terminal the "
        "details are redrawn in place; otherwise one line is printed each time its state "
        "changes (with --json, one JSON object a line).",
    )
    command(
        "list",
        _list_arguments,
        help="list jobs, newest first",
        description=f"List the jobs you may see, newest first: the newest {DEFAULT_LIST_LIMIT} "
        "unless told otherwise.",
    )
    command(
        "top",
        _top_arguments,
        help="a live table of running jobs with their CPU and memory use",
        description="A table of running jobs, refreshed in place on a terminal; a single "
        "plain-text snapshot with --once or when stdout is not a terminal. CPU% is the "
        "share of one core since the last refresh (the average since the job started, on "
        "the first); MEM is the memory the job uses now, page cache included. "
        f"At most {TOP_MAX_JOBS} jobs are shown. Ctrl-C quits (exit 0).",
    )
    command(
        "config",
        _config_arguments,
        help="show jobctl's config file (contexts)",
        description="Show jobctl's config file: named servers (contexts), chosen with "
        "--context NAME or JOBCTL_CONTEXT. Nothing here connects to a server.",
        epilog=CONFIG_EPILOG,
        formatter_class=_raw_formatter,
    )
    command(
        "completion",
        _completion_arguments,
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script for jobctl's commands and options.",
        epilog="bash: source <(jobctl completion bash), or save it as\n"
        "  ~/.local/share/bash-completion/completions/jobctl\n"
        "zsh:  source <(jobctl completion zsh) after compinit, or save it as _jobctl in a\n"
        "  folder of $fpath",
        formatter_class=_raw_formatter,
    )
    command(
        "logs",
        _logs_arguments,
        help="print a job's output",
        description="Print a job's output as it was written: stdout to stdout, stderr to "
        "stderr, byte for byte. Without -f, a running job's output is printed up to where it "
        "was when asked.",
        epilog=LOGS_EPILOG,
    )
    return parser


def _start_arguments(start: argparse.ArgumentParser) -> None:
    start.add_argument(
        "--json", action="store_true", help="print the started job as JSON instead of its id"
    )
    add_start_options(start)


def _run_arguments(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--detach-on-interrupt",
        action="store_true",
        help="on Ctrl-C leave the job running and exit 130 (default: stop the job)",
    )
    add_start_options(run)


def _stop_arguments(stop: argparse.ArgumentParser) -> None:
    stop.add_argument(
        "--grace",
        metavar="SECONDS",
        type=seconds,
        default=None,
        help="time between SIGTERM and SIGKILL (default: the server's, 10 s)",
    )
    stop.add_argument("--json", action="store_true", help="print the stopped job as JSON")
    stop.add_argument("id", metavar="ID")


def _status_arguments(status: argparse.ArgumentParser) -> None:
    status.add_argument("--json", action="store_true", help="print the job as JSON")
    status.add_argument(
        "-w", "--watch", action="store_true", help="refresh until the job ends, then exit 0"
    )
    status.add_argument(
        "--interval",
        metavar="SECONDS",
        type=interval,
        default=DEFAULT_INTERVAL,
        help=f"time between refreshes with --watch (default: {DEFAULT_INTERVAL:g})",
    )
    status.add_argument("id", metavar="ID")


def _list_arguments(ls: argparse.ArgumentParser) -> None:
    ls.add_argument("--json", action="store_true", help="print a JSON array of jobs")
    ls.add_argument("--owner", metavar="NAME", default="", help="only jobs of this identity")
    how_many = ls.add_mutually_exclusive_group()
    how_many.add_argument(
        "--limit",
        metavar="N",
        type=positive,
        default=DEFAULT_LIST_LIMIT,
        help=f"show the newest N jobs (default: {DEFAULT_LIST_LIMIT})",
    )
    how_many.add_argument("--all", action="store_true", help="show every job")


def _top_arguments(top: argparse.ArgumentParser) -> None:
    top.add_argument("--once", action="store_true", help="print one snapshot and exit")
    top.add_argument(
        "--json", action="store_true", help="one snapshot as a JSON array (with cpu_percent)"
    )
    top.add_argument("--owner", metavar="NAME", default="", help="only jobs of this identity")
    top.add_argument(
        "--interval",
        metavar="SECONDS",
        type=interval,
        default=DEFAULT_INTERVAL,
        help=f"time between refreshes (default: {DEFAULT_INTERVAL:g})",
    )


def _config_arguments(config: argparse.ArgumentParser) -> None:
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    contexts = config_sub.add_parser(
        "contexts",
        help="list the contexts; * marks the one in use",
        description="List the contexts of the config file; * marks the one in use.",
    )
    contexts.add_argument("--json", action="store_true", help="print them as JSON")


def _completion_arguments(completion: argparse.ArgumentParser) -> None:
    completion.add_argument("shell", choices=("bash", "zsh"), help="the shell")


def _logs_arguments(logs: argparse.ArgumentParser) -> None:
    logs.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep printing until the job ends (Ctrl-C leaves it running)",
    )
    which = logs.add_mutually_exclusive_group()
    which.add_argument(
        "--stdout",
        dest="only",
        action="store_const",
        const="stdout",
        default=None,
        help="only the job's stdout",
    )
    which.add_argument(
        "--stderr", dest="only", action="store_const", const="stderr", help="only the job's stderr"
    )
    where = logs.add_mutually_exclusive_group()
    where.add_argument(
        "--tail",
        metavar="N",
        type=line_count,
        default=0,
        help="start N lines before the end (of the chosen stream, with --stdout/--stderr)",
    )
    where.add_argument(
        "--offset",
        metavar="N",
        type=offset,
        default=0,
        help="start at a position the server handed out before (a chunk's next_offset, as "
        "named when a connection breaks)",
    )
    logs.add_argument("id", metavar="ID")


def exit_code_for(exc: BaseException) -> int:
    """The exit status for an error raised by :mod:`jobctl.client` (or anything else)."""
    from jobctl import client

    if isinstance(exc, client.AddressError | client.CertificateError):
        return EXIT_USAGE
    if isinstance(exc, client.ConnectError | client.Unavailable):
        return EXIT_CONNECT
    return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from jobctl.lazyproto import defer_python_message

    defer_python_message()
    from jobctl.client import ClientError
    from jobctl.commands import CommandFailed, run

    try:
        code = asyncio.run(run(args))
    except (ClientError, CommandFailed) as exc:
        _error(str(exc))
        return exit_code_for(exc)
    sys.stdout.flush()  # surface a broken pipe here, not in the interpreter's exit
    return code


class ConfigFileError(Exception):
    """jobctl's config file is unusable, or names no such context (a usage error)."""


def _apply_context(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Fill the connection options from the chosen context (see :mod:`jobctl.config`)."""
    from jobctl import config

    path, named = config.config_path(args.config, env)
    try:
        context = config.chosen(config.load(path, required=named), args.context, env)
    except config.ConfigError as exc:
        raise ConfigFileError(str(exc)) from None
    fields = ("server", "cacert", "cert", "key")
    options = config.apply(
        {name: getattr(args, name) for name in fields},
        getattr(args, "explicit", frozenset()),
        context,
        env,
    )
    for name in fields:
        setattr(args, name, options[name])


def _config(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``jobctl config contexts``: no connection, no asyncio."""
    from jobctl import config

    path, named = config.config_path(args.config, env)
    try:
        loaded = config.load(path, required=named)
        current = config.chosen(loaded, args.context, env)
    except config.ConfigError as exc:
        raise ConfigFileError(str(exc)) from None
    names = sorted(loaded.contexts)
    if args.json:
        import json

        print(
            json.dumps(
                {
                    "config": str(loaded.path),
                    "current": current.name if current else None,
                    "contexts": {n: dict(loaded.contexts[n].values) for n in names},
                },
                indent=2,
            )
        )
        return EXIT_OK
    if not names:
        _error(f"note: no contexts (config file: {loaded.path})")
        return EXIT_OK
    rows = [("CURRENT", "NAME", "SERVER")] + [
        (
            "*" if current and current.name == n else "",
            n,
            loaded.contexts[n].values.get("server", "-"),
        )
        for n in names
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip())
    return EXIT_OK


def _main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run jobctl with ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    env = os.environ if environ is None else environ
    try:
        words = sys.argv[1:] if argv is None else argv
        args = build_parser(env, lazy=True, argv=words).parse_args(words)
        if args.command == "config":
            return _config(args, env)
        if args.command == "completion":
            from jobctl import completion

            print(completion.script(args.shell, build_parser({})), end="")
            return EXIT_OK
        _apply_context(args, env)
        return _run(args)
    except SystemExit as exc:  # argparse: --help, or a usage error it has already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE if exc.code else EXIT_OK
    except ConfigFileError as exc:  # the config file, or the context named
        _error(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        _error(f"unexpected error: {type(exc).__name__}: {exc}")
        if (environ if environ is not None else os.environ).get("JOBCTL_DEBUG"):
            import traceback

            traceback.print_exc()
        else:
            _error("set JOBCTL_DEBUG=1 to see the traceback")
        return EXIT_FAILED


def main() -> NoReturn:
    code = _main()
    try:
        sys.stdout.flush()  # what --help or `config` printed last: a closed pipe shows here
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE
    except OSError as exc:
        _error(f"cannot write the output: {exc.strerror or exc}")
        code = code or EXIT_FAILED
    if code == EXIT_BROKEN_PIPE:
        # Python flushes stdout again at exit; point it at /dev/null so that flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    _exit(code)


def _exit(code: int) -> NoReturn:
    """Leave the process now, without the interpreter's finalization, when it has nothing
    left to do.

    By the time :func:`main` gets here every command has closed what it opened (the channel,
    the event loop, asyncio's worker threads) and stdout is flushed. What finalization would
    still do is free every module and object one by one: ~18 ms once asyncio, grpclib and
    protobuf are loaded, more than all of ``jobctl --help``. atexit handlers still run and the
    standard streams are flushed; should a thread still run (none does), the ordinary exit,
    which waits for it, is taken instead.
    """
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
