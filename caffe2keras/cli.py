"""The `caffe2keras` command line."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings

from . import __version__
from .errors import CaffeWarning, NameNotFoundError, UserInputError
from .quiet import quiet_tensorflow_import

COMMANDS = ["inspect", "convert", "weights", "predict", "codegen", "verify", "dump_reference", "mean",
            "train"]


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="caffe2keras",
        description="Convert Caffe models (prototxt + caffemodel) to exact Keras 3 models. "
                    "No Caffe needed.")
    parser.add_argument("--version", action="version", version=f"caffe2keras {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name in COMMANDS:
        mod = importlib.import_module(f".commands.{name}", __package__)
        mod.add_parser(sub)
        modules[name.replace("_", "-")] = mod
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    warnings.showwarning = _show_warning
    warnings.simplefilter("default", CaffeWarning)
    quiet_tensorflow_import()
    try:
        return modules[args.command].run(args)
    except UserInputError as e:  # a bad file (CaffeFormatError), option or image
        return _fail(e)
    except NameNotFoundError as e:  # unknown blob names and the like: a full sentence
        return _fail(e)
    except BrokenPipeError:  # `caffe2keras inspect ... | head`: the reader left; so do we
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # unreadable input, unwritable output, disk full
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}")
    except MemoryError:
        return _fail("out of memory")
    except KeyboardInterrupt:
        print("caffe2keras: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - InternalError and anything unexpected: a bug
        return _bug()


def _bug() -> int:
    """A bug, not the user's input: the traceback, and where to report it. Exit status 70
    (EX_SOFTWARE), so scripts can tell it from a user error (1)."""
    import traceback

    traceback.print_exc()
    print(f"caffe2keras: internal error (a bug in caffe2keras {__version__}, not in your "
          f"files); please report it with the traceback above", file=sys.stderr)
    return 70


def _fail(message) -> int:
    """One line on stderr (newlines inside names shown escaped), exit status 1."""
    text = str(message).replace("\r", "\\r").replace("\n", "\\n")
    print(f"caffe2keras: error: {text}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
