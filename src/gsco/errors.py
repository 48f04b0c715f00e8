"""The one base of every error gsco raises about its input: a config key, a file, a model folder, a dataset, an
output folder, a server. Entry points (:func:`gsco.cli.command`) turn a :class:`GscoError` into one ``error: ...``
line and exit status 2; anything else is a bug and shows its traceback.

Each error also derives from the built-in exception it is a kind of (``ValueError`` for bad values,
``RuntimeError`` for a state of the world, ``FileNotFoundError`` for missing weights), so callers catching those
keep working."""


class GscoError(Exception):
    """Bad input or an environment gsco cannot work in, said in one line that names the key, file or folder."""


class MissingDependencyError(GscoError, RuntimeError):
    """A program or package the run needs is not installed here; the message names the command that installs it."""
