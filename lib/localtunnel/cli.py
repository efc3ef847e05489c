"""What both entry points share: exit statuses, one-line usage errors, logging setup, patching.

In the manner of httpie: `main(argv=None) -> int`, statuses as an IntEnum, and nothing a user
types can produce a traceback.
"""
import enum
import logging
import re
import sys

from docopt import DocoptExit, docopt

from . import __version__


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1          # could not do the job (port in use, server refused...)
    USAGE = 2          # a bad flag or value: fix the command line
    INTERRUPTED = 130  # Ctrl-C


class UsageError(Exception):
    """A command-line mistake, said in one line."""


_UNMATCHED = re.compile(r"(?:Option|Argument)\([^,]*, '([^']*)'")


def parse_args(doc, argv):
    """docopt, with its multi-line complaints turned into one line that names the culprit."""
    try:
        return docopt(doc, argv=argv, default_help=False)
    except DocoptExit as exc:
        first = str(exc).splitlines()[0] if str(exc) else "bad command line"
        names = _UNMATCHED.findall(first)
        if names:
            first = "unknown or repeated option or argument: %s" % " ".join(names)
        raise UsageError(first) from None


def parse_command_line(doc, argv, version, default_log_level):
    """docopt, --help and --version answered, logging set up. Returns the parsed arguments, or
    None when --help or --version was the whole job. Raises UsageError."""
    args = parse_args(doc, argv)
    if args["--help"]:
        print(doc.strip())
        return None
    if args["--version"]:
        print(version)
        return None
    configure_logging(args["--log-level"] or default_log_level)
    return args


def run_main(prog, doc, argv, default_log_level, configure, run, usage_errors=()):
    """Both entry points' main(): parse the command line (--help and --version answer and return
    OK), build what it asks for with `configure(args)`, then return `run(what was built)`. A
    UsageError, or one of `usage_errors`, is one line on stderr and exit status 2."""
    try:
        args = parse_command_line(doc, argv, __version__, default_log_level)
        if args is None:
            return ExitStatus.OK
        built = configure(args)
    except (UsageError, *usage_errors) as exc:
        return fail(prog, exc, ExitStatus.USAGE)
    return run(built)


def fail(prog, message, status):
    """Print `prog: message` on stderr and return `status`, for `return fail(...)`."""
    print("%s: %s" % (prog, message), file=sys.stderr)
    return status


def configure_logging(level_name):
    level = getattr(logging, str(level_name).upper(), None)
    if not isinstance(level, int):
        raise UsageError("--log-level=%s: expected debug, info, warning or error" % level_name)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Access lines stand alone on stdout, like gunicorn's --access-logfile -.
    access = logging.getLogger("localtunnel.access")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers[:] = [handler]
    access.propagate = False


def run_cooperatively(main):
    """A console script's body: patch for gevent, then run `main()` and exit with its status. The
    module that defines `main` is already imported by then, which is fine as long as it only
    creates sockets once main() runs (Server refuses to run on blocking ones)."""
    from gevent import monkey

    monkey.patch_all()
    sys.exit(main())
