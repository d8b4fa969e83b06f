"""``python -m ferlit.fit``: train (the ``fit`` stage of ``python -m ferlit``).

The command line lives in :mod:`ferlit.training.cli`; this entry point keeps the README's commands
and W&B sweeps (``program: ferlit.fit``) working.
"""

import sys

if __name__ == "__main__":
    from ferlit.help_cache import print_help

    def _fit() -> None:
        from ferlit.errors import data_warnings_as_lines, quiet_closed_stdout
        from ferlit.training.cli import main

        with quiet_closed_stdout(), data_warnings_as_lines():
            main()

    # A plain --help is printed without importing Lightning (ferlit.help_cache).
    from ferlit.errors import quiet_closed_stdout

    with quiet_closed_stdout():
        if not print_help("fit", sys.argv[1:], _fit):
            _fit()
else:
    from ferlit.training.cli import main  # noqa: F401 (ferlit.fit.main, as before)
