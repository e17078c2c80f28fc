"""The user-error types (bad input: files, options, images), the bug type, and the
warning category."""
from __future__ import annotations


class UserInputError(ValueError):
    """A value the user gave (an option, an argument, an image) does not fit; the message
    says what was expected and what was found. The CLI reports it in one line, exit 1.
    A ValueError, so API callers catching ValueError still catch it."""


class CaffeFormatError(UserInputError):
    """A Caffe file (or a net it describes) is malformed or unsupported.

    The message always names the file and, where known, the position (byte offset
    for binary files, line:column for text), the layer, and what was expected.
    """

    def __init__(self, message: str, *, path=None, position=None, layer=None):
        self.path = None if path is None else str(path)
        self.position = position
        self.layer = layer
        self.detail = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path:
            where = self.path
            if self.position is not None:
                where += f":{self.position}"
            where += ": "
        elif self.position is not None:
            where = f"at {self.position}: "
        if self.layer:
            where += f"layer '{self.layer}': "
        return where + self.detail

    def with_context(self, *, path=None, layer=None) -> CaffeFormatError:
        """Fill in file/layer where the raiser did not know them."""
        return CaffeFormatError(
            self.detail,
            path=self.path or path,
            position=self.position,
            layer=self.layer or layer,
        )


class CaffeWarning(UserWarning):
    """Something odd but survivable in a Caffe file (unknown field, extra weights...)."""


class UnsupportedLayerError(CaffeFormatError):
    """The net has layer types the converter cannot handle (all are listed)."""


class InternalError(RuntimeError):
    """A broken invariant inside caffe2keras: a bug, not a problem with the user's files.
    The CLI reports it with a traceback and asks for a bug report."""


class NameNotFoundError(KeyError):
    """A name the user gave (an output blob, a model input) does not exist; the message
    is a full sentence listing what does. A KeyError for the API's sake, a one-line
    user error for the CLI (unlike any other KeyError, which is a bug)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
